"""The debug console (``tidings serve --console``): a page at ``/console`` that shows one
app's live traffic, the counterpart of Pusher's debug console (docs/console.md).

- ``tap.py``: what the node and the edges record, per app, only while someone watches;
- ``streams.py``: the Server-Sent Events listeners of this node and their bounded queues;
- ``watch.py``: who watches which app, cluster-wide, and the records and stats sent to them;
- ``auth.py``: logins, signed session cookies and CSRF tokens;
- ``routes.py``: the aiohttp routes of the page and its JSON API.
"""
