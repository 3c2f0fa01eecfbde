// Type declarations of tidings.js (served by Tidings at /tidings.js). Docs: js/README.md.
// As a <script>, the file defines the global `Tidings`; under Node or a bundler it is a
// CommonJS module exporting both functions. pusher-js objects are described by the members
// tidings.js uses, so these types need no other package.

export as namespace Tidings;

/** A pusher-js channel, or a Laravel Echo channel (which keeps it as `subscription`). */
export interface ChannelLike {
  bind(event: string, callback: (data: any) => void): unknown;
  unbind(event: string, callback: (data: any) => void): unknown;
  subscribed?: boolean;
  pusher?: { connection: { socket_id?: string } };
}
export type LiveChannel = ChannelLike | { subscription: ChannelLike };

export type Change<Row> =
  | { type: 'snapshot'; version: number }
  | { type: 'created' | 'updated' | 'deleted'; id: unknown; row: Row };

export interface LiveCollectionOptions<Row> {
  /** The row field that identifies a row (default 'id'). */
  key?: string;
  /** The row field holding its version, an integer bumped on every save (default 'version'). */
  version?: string;
  onChange?(rows: Row[], change: Change<Row>): void;
  /** A row too big for an event: fetch it and hand it to put(row). */
  onStale?(id: unknown): void;
  onError?(error: unknown): void;
  /** An endpoint of your app answering {rows, version}, for servers that send no snapshot. */
  snapshotUrl?: string;
  /** Milliseconds before the snapshot request is given up (default 10000). */
  snapshotTimeout?: number;
  /** How many deleted ids to remember (default 10000). */
  maxTombstones?: number;
}

export interface LiveCollection<Row> {
  /** Every row: snapshot order, then order of arrival. The same array until the next change. */
  readonly rows: Row[];
  get(id: unknown): Row | undefined;
  /** An event ('created', 'updated' or 'deleted') through the same version check. */
  apply(type: 'created' | 'updated' | 'deleted', data: Partial<Row>): void;
  put(row: Row): void;
  refresh(): void;
  unbind(): void;
}

export function liveCollection<Row extends object = Record<string, any>>(
  channel: LiveChannel,
  options?: LiveCollectionOptions<Row>,
): LiveCollection<Row>;

/** A pusher-js client, or a Laravel Echo instance (which keeps it as `connector.pusher`). */
export type SocketClient =
  | { connection: { state: string; socket_id?: string } }
  | { connector: { pusher: { connection: { state: string; socket_id?: string } } } };

/** A copy of `headers`, with `X-Socket-ID` while `client` is connected. */
export function socketHeaders(
  client: SocketClient,
  headers?: Record<string, string>,
): Record<string, string>;

/** Where positions are kept between pages: sessionStorage in a browser. */
export interface PositionStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface RecoveryOptions {
  storage?: PositionStorage | null;
}

/** The members of a pusher-js 8 client that withRecovery extends. */
export interface RecoverablePusher {
  key: string;
  send_event(name: string, data: any, channel?: string): boolean;
  channel(name: string): { subscribed: boolean } | undefined;
  connection: {
    state: string;
    socket_id: string;
    bind(event: string, callback: (...args: any[]) => void): unknown;
  };
}

/** The data of the `tidings:unrecovered` event: the channel's position now. */
export interface Position {
  epoch: string;
  offset: number;
}

/** Makes `pusher` recover the events it missed while disconnected; returns it. */
export function withRecovery<P extends RecoverablePusher>(pusher: P, options?: RecoveryOptions): P;
