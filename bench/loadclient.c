/*
 * Fan-out load client for bench/fanout.py and bench/cluster.py (compiled by the harness into
 * bench/results/).
 *
 * One process, one epoll loop (level-triggered, non-blocking sockets) holding N subscriber
 * connections plus a few keep-alive HTTP connections that publish through the Pusher REST
 * API. C rather than Python so the client is not the bottleneck; the harness records its CPU
 * anyway. Every read is up to 256 KiB and every complete frame in it is parsed (a fast server
 * coalesces several frames for one socket into one TCP segment).
 *
 *   loadclient [-P pusher|socketio] [-2 PORT2] [-S SOURCES]
 *              HOST PORT APP_KEY N REQUEST_FILE N_PUBLISHERS
 *
 *   -P pusher     Pusher protocol 7 on /app/APP_KEY (the default)
 *   -P socketio   Socket.IO v5 over Engine.IO v4, WebSocket transport only, on /socket.io/:
 *                 server "0{...}" (EIO open) -> client "40" (connect the default namespace)
 *                 -> server "40{...}"; subscribe is the event 420["subscribe","bench"] with ack
 *                 id 0, answered by the ack 430[...]; broadcasts arrive as 42["e","<data>"];
 *                 the server's EIO ping "2" is answered with "3".
 *   -2 PORT2      every odd subscriber connects to PORT2 instead (two nodes, cluster.py)
 *   -W SPIN_US    in the latency phase, poll epoll this long before sleeping in it (200;
 *                 0 = always sleep): a wake-up per few sockets would add its delay to the
 *                 measured latency (the saturation phase always sleeps: it reports CPU)
 *   -S SOURCES    spread subscribers over SOURCES loopback source addresses 127.0.0.1,
 *                 127.0.0.2, ... (bind with IP_BIND_ADDRESS_NO_PORT), since one source address
 *                 gives at most one connection per ephemeral port to one server port; the
 *                 default is 1 up to 20,000 subscribers and one more per 20,000 above
 *
 * REQUEST_FILE holds pre-signed HTTP requests ("M\n" then M times "LEN\n" + LEN bytes);
 * request i publishes a message whose data carries "seq":i, so the send time of every
 * delivery is known here and latency = receive time - send time (CLOCK_MONOTONIC).
 *
 * Commands, one per line on stdin; each answers with one JSON line on stdout. Every phase
 * is bounded by a deadline (seconds, the last argument; defaults in brackets). Between
 * commands the client keeps serving its sockets (pusher:ping is answered, closes noticed):
 *   connect C [DEADLINE 120]       open N sockets, <= C handshakes in flight, until the
 *                                  protocol's "connected" answer on each
 *   subscribe C [DEADLINE 120]     subscribe each to "bench", <= C in flight
 *   warm COUNT [DEADLINE 10]       COUNT publishes in turn, each waits for all deliveries
 *                                  (DEADLINE is per publish)
 *   latency RATE SECONDS [DRAIN 15]
 *                                  open loop at RATE msg/s; latency from scheduled send time;
 *                                  also the spread of each broadcast (first to last delivery)
 *   saturate K WARM_S WINDOW_S [DRAIN 15]
 *                                  closed loop, <= K broadcasts in flight; prints a
 *                                  sat_start and a sat_end line around the measured window
 *   verify [SEQS]                  per published seq: did every subscriber get it once?
 *                                  (with SEQS: seqs 0..SEQS-1, whoever published them:
 *                                  another client process of bench/hold.py)
 *   quit                           close everything with SO_LINGER 0 (no TIME_WAIT) and exit
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING = 1, ST_UPGRADING, ST_WAIT_ESTABLISHED, ST_OPEN, ST_SUB_SENT, ST_SUBSCRIBED, ST_CLOSED };
enum { K_SUB = 1, K_PUB };
enum { P_PUSHER = 0, P_SOCKETIO };

typedef struct Conn {
    int fd;
    uint8_t kind;
    uint8_t state;
    uint8_t busy; /* publisher: a request is waiting for its response */
    char *buf;    /* bytes carried over between reads (partial frame / response) */
    size_t len, cap;
} Conn;

static const char *g_host;
static int g_port;
static const char *g_key;
static int g_n;
static int g_npub;
static int g_epfd;
static struct sockaddr_in g_addr;
static struct sockaddr_in g_addr2; /* -2: odd subscribers go here */
static int g_port2;
static int g_proto = P_PUSHER;
static int g_nsrc; /* -S: loopback source addresses for subscribers (0 = auto) */
static int g_spin_us = 200; /* -W: poll this long before sleeping in epoll_wait */
static int g_spinning;      /* only in the latency phase: the saturation phase reports CPU */

static Conn *g_subs;
static Conn *g_pubs;
static Conn **g_fdmap;
static int g_fdmap_cap;

static char **g_req;
static size_t *g_req_len;
static long g_nreq;
static long g_next_seq;
static uint64_t *g_sent_ns;
static uint32_t *g_seq_count;
static uint64_t *g_first_ns, *g_last_ns; /* first and last delivery of each seq */
static uint64_t g_now;                   /* read once per read(): frames in it share it */

static char g_handshake[512];
static size_t g_handshake_len;
static unsigned char g_rbuf[262144];
static const char *g_sub_msg;

/* counters */
static long g_established, g_subscribed, g_failed, g_closed_by_peer, g_inflight;
static uint64_t g_last_event_ns;
static uint64_t g_delivered;     /* deliveries of "seq" messages, all phases */
static uint64_t g_reads, g_waits; /* read() calls on subscriber sockets, epoll_wait calls */
static uint64_t g_unexpected;    /* other text frames on subscribed sockets */
static long g_pub_errors, g_pub_done, g_pub_reconnects;
static int g_close_codes[8];
static int g_nclose_codes;
static int g_errors_printed;
static Conn g_stdin_mark; /* stdin's place in the epoll set while waiting for a command */
static int g_stdin_ready;

/* latency recording */
static int g_lat_on;
static long g_lat_lo, g_lat_hi;
static uint32_t *g_lat; /* microseconds */
static size_t g_lat_n, g_lat_cap;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg) {
    fprintf(stderr, "loadclient: %s: %s\n", msg, strerror(errno));
    exit(1);
}

static void stash(Conn *c, const unsigned char *p, size_t n) {
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 512;
        while (cap < c->len + n) cap *= 2;
        c->buf = realloc(c->buf, cap);
        if (!c->buf) die("realloc");
        c->cap = cap;
    }
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}

static void watch(Conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(g_epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void close_conn(Conn *c, int by_peer) {
    if (c->fd < 0) return;
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->kind == K_SUB) {
        if (c->state == ST_SUBSCRIBED) g_subscribed--;
        if (c->state == ST_SUBSCRIBED || c->state == ST_OPEN || c->state == ST_SUB_SENT)
            g_established--;
        if (c->state == ST_CONNECTING || c->state == ST_UPGRADING ||
            c->state == ST_WAIT_ESTABLISHED || c->state == ST_SUB_SENT) {
            g_inflight--;
            g_failed++;
        }
    }
    if (by_peer) g_closed_by_peer++;
    c->fd = -1;
    c->state = ST_CLOSED;
    c->len = 0;
}

static int send_all(Conn *c, const void *p, size_t n) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w == (ssize_t)n) return 0;
    /* Every message here is small and goes to a socket with an empty send buffer. */
    fprintf(stderr, "loadclient: short write (%zd of %zu): %s\n", w, n, strerror(errno));
    close_conn(c, 0);
    return -1;
}

/* Client frames must be masked (RFC 6455 5.3); a zero mask key leaves the payload as is. */
/* One masked frame of n <= 125 bytes (the mask key is zero, so the payload goes as is).
 * n is explicit: a ping's payload is binary (websockets sends 4 random bytes) and may hold
 * a zero byte, and a pong must echo it whole or the server times the socket out (1011). */
static int send_frame(Conn *c, const char *msg, size_t n, uint8_t opcode) {
    unsigned char f[256];
    if (n > 125) return -1;
    f[0] = 0x80 | opcode;
    f[1] = 0x80 | (unsigned char)n;
    memset(f + 2, 0, 4);
    memcpy(f + 6, msg, n);
    return send_all(c, f, n + 6);
}

static int send_text(Conn *c, const char *msg) {
    return send_frame(c, msg, strlen(msg), 0x1);
}

static void on_delivery(long seq, uint64_t t) {
    g_delivered++;
    if (seq < 0 || seq >= g_nreq) return;
    if (g_seq_count[seq]++ == 0) g_first_ns[seq] = t;
    g_last_ns[seq] = t;
    if (g_lat_on && seq >= g_lat_lo && seq < g_lat_hi && g_lat_n < g_lat_cap) {
        uint64_t sent = g_sent_ns[seq];
        g_lat[g_lat_n++] = t > sent ? (uint32_t)((t - sent) / 1000) : 0;
    }
}

/* The event's data is the JSON string {"seq":123,...}, so inside the frame it reads
 * seq\":123 for both protocols. Returns 1 if the frame was a delivery. */
static int find_seq(const char *p, size_t n) {
    const char *s = memmem(p, n, "seq\\\":", 6);
    if (!s) return 0;
    s += 6;
    long seq = 0;
    while (s < p + n && *s >= '0' && *s <= '9') seq = seq * 10 + (*s++ - '0');
    on_delivery(seq, g_now);
    return 1;
}

static void established(Conn *c) {
    c->state = ST_OPEN;
    g_established++;
    g_inflight--;
    g_last_event_ns = g_now;
}

static void subscribed(Conn *c) {
    c->state = ST_SUBSCRIBED;
    g_subscribed++;
    g_inflight--;
    g_last_event_ns = g_now;
}

/* Socket.IO v5 packets over Engine.IO v4, one packet per WebSocket text frame: the first
 * character is the EIO type (0 open, 1 close, 2 ping, 3 pong, 4 message); in a message the
 * second is the Socket.IO type (0 connect, 2 event, 3 ack, 4 connect error). */
static void on_text_socketio(Conn *c, const char *p, size_t n) {
    if (n >= 2 && p[0] == '4' && p[1] == '2') {
        if (c->state == ST_SUBSCRIBED && find_seq(p, n)) return;
        if (c->state == ST_SUBSCRIBED) g_unexpected++;
        return;
    }
    if (n == 1 && p[0] == '2') { /* EIO ping: the client must answer within pingTimeout */
        send_text(c, "3");
        return;
    }
    if (n >= 1 && p[0] == '0' && c->state == ST_WAIT_ESTABLISHED) {
        send_text(c, "40"); /* EIO is open: connect the default namespace */
        return;
    }
    if (n >= 2 && p[0] == '4' && p[1] == '0' && c->state == ST_WAIT_ESTABLISHED) {
        established(c);
        return;
    }
    if (n >= 3 && p[0] == '4' && p[1] == '3' && p[2] == '0' && c->state == ST_SUB_SENT) {
        subscribed(c);
        return;
    }
    if (g_errors_printed < 5) {
        g_errors_printed++;
        fprintf(stderr, "loadclient: server sent %.*s\n", (int)(n > 300 ? 300 : n), p);
    }
    if (c->state == ST_SUBSCRIBED) g_unexpected++;
}

static void on_text(Conn *c, const char *p, size_t n) {
    if (g_proto == P_SOCKETIO) {
        on_text_socketio(c, p, n);
        return;
    }
    /* {"event":"e","channel":"bench","data":"{\"seq\":123,...}"} */
    if (c->state == ST_SUBSCRIBED && find_seq(p, n)) return;
    if (memmem(p, n, "\"pusher:ping\"", 13)) {
        send_text(c, "{\"event\":\"pusher:pong\",\"data\":{}}");
        return;
    }
    if (c->state == ST_WAIT_ESTABLISHED && memmem(p, n, "pusher:connection_established", 29)) {
        established(c);
        return;
    }
    if (c->state == ST_SUB_SENT && memmem(p, n, "pusher_internal:subscription_succeeded", 38)) {
        subscribed(c);
        return;
    }
    if (memmem(p, n, "pusher:error", 12) && g_errors_printed < 5) {
        g_errors_printed++;
        fprintf(stderr, "loadclient: server sent %.*s\n", (int)(n > 300 ? 300 : n), p);
    }
    if (c->state == ST_SUBSCRIBED) g_unexpected++;
}

/* Parses complete frames in p[0..n); returns the number of bytes consumed. */
static size_t parse_frames(Conn *c, const unsigned char *p, size_t n) {
    size_t off = 0;
    while (c->fd >= 0 && n - off >= 2) {
        const unsigned char *f = p + off;
        uint8_t opcode = f[0] & 0x0f;
        int masked = f[1] & 0x80;
        uint64_t plen = f[1] & 0x7f;
        size_t hdr = 2;
        if (plen == 126) {
            if (n - off < 4) break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hdr = 4;
        } else if (plen == 127) {
            if (n - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | f[2 + i];
            hdr = 10;
        }
        if (masked) hdr += 4; /* servers never mask; skip the key if one does */
        if (n - off < hdr + plen) break;
        const char *payload = (const char *)f + hdr;
        if (opcode == 0x1) {
            on_text(c, payload, plen);
        } else if (opcode == 0x8) {
            int code = plen >= 2 ? ((unsigned char)payload[0] << 8) | (unsigned char)payload[1] : 0;
            if (g_nclose_codes < 8) g_close_codes[g_nclose_codes++] = code;
            close_conn(c, 1);
            return n;
        } else if (opcode == 0x9 && plen <= 125) {
            send_frame(c, payload, plen, 0xA);
        }
        off += hdr + plen;
    }
    return off;
}

static void handle_sub_data(Conn *c, const unsigned char *data, size_t n) {
    const unsigned char *p = data;
    if (c->len) {
        stash(c, data, n);
        p = (const unsigned char *)c->buf;
        n = c->len;
    }
    size_t off = 0;
    if (c->state == ST_UPGRADING) {
        const unsigned char *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) {
            if (!c->len) stash(c, data, n);
            return;
        }
        if (n < 12 || memcmp(p + 9, "101", 3) != 0) {
            if (g_errors_printed++ < 5)
                fprintf(stderr, "loadclient: upgrade refused: %.*s\n", (int)(end - p), p);
            close_conn(c, 0);
            return;
        }
        c->state = ST_WAIT_ESTABLISHED;
        off = (size_t)(end - p) + 4;
    }
    off += parse_frames(c, p + off, n - off);
    if (c->fd < 0) return;
    if (p == (const unsigned char *)c->buf) {
        memmove(c->buf, c->buf + off, n - off);
        c->len = n - off;
    } else if (off < n) {
        stash(c, p + off, n - off);
    }
}

static void register_fd(Conn *c) {
    if (c->fd >= g_fdmap_cap) {
        fprintf(stderr, "loadclient: fd %d over table size\n", c->fd);
        exit(1);
    }
    g_fdmap[c->fd] = c;
}

/* A keep-alive HTTP connection for publishing (blocking connect: loopback, rare). */
static void open_publisher(Conn *c) {
    c->kind = K_PUB;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0)
        die("publisher connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->state = ST_OPEN;
    c->busy = 0;
    c->len = 0;
    register_fd(c);
    watch(c, EPOLLIN, EPOLL_CTL_ADD);
}

/* The server closed a publisher (Soketi answers every REST call with Connection: close):
 * open a new one; a request still waiting for its answer is lost and counted as an error. */
static void reopen_publisher(Conn *c) {
    if (c->busy) g_pub_errors++;
    close_conn(c, 0);
    g_pub_reconnects++;
    open_publisher(c);
}

static void handle_pub_data(Conn *c, const unsigned char *data, size_t n) {
    stash(c, data, n);
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) return;
        size_t hlen = (size_t)(end - c->buf) + 4;
        int status = c->len > 12 ? atoi(c->buf + 9) : 0;
        size_t blen = 0;
        char save = *end;
        *end = 0;
        char *cl = strcasestr(c->buf, "\r\ncontent-length:");
        int chunked = strcasestr(c->buf, "\r\ntransfer-encoding: chunked") != NULL;
        int closing = strcasestr(c->buf, "\r\nconnection: close") != NULL;
        *end = save;
        size_t total;
        if (cl) {
            blen = (size_t)strtoul(cl + 17, NULL, 10);
            total = hlen + blen;
            if (c->len < total) return;
        } else if (chunked) {
            char *z = memmem(c->buf + hlen, c->len - hlen, "0\r\n\r\n", 5);
            if (!z) return;
            total = (size_t)(z - c->buf) + 5;
            blen = total - hlen;
        } else {
            total = hlen;
        }
        if (status != 200) {
            g_pub_errors++;
            if (g_errors_printed++ < 5)
                fprintf(stderr, "loadclient: publish answered %d: %.*s\n", status,
                        (int)(blen > 200 ? 200 : blen), c->buf + hlen);
        }
        g_pub_done++;
        c->busy = 0;
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
        if (closing) {
            reopen_publisher(c);
            return;
        }
    }
}

static void on_event(Conn *c, uint32_t events) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            if (g_errors_printed++ < 5) fprintf(stderr, "loadclient: connect: %s\n", strerror(err));
            close_conn(c, 0);
            return;
        }
        c->state = ST_UPGRADING;
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        send_all(c, g_handshake, g_handshake_len);
        return;
    }
    for (;;) {
        ssize_t r = read(c->fd, g_rbuf, sizeof g_rbuf);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 && c->kind == K_PUB) {
            reopen_publisher(c);
            return;
        }
        if (r <= 0) {
            close_conn(c, 1);
            return;
        }
        g_now = now_ns();
        g_reads++;
        if (c->kind == K_SUB)
            handle_sub_data(c, g_rbuf, (size_t)r);
        else
            handle_pub_data(c, g_rbuf, (size_t)r);
        /* level-triggered: one read per ready socket per loop turn keeps things fair */
        return;
    }
}

static void pump(int timeout_ms) {
    static struct epoll_event evs[4096]; /* large batches: one epoll_wait per many reads */
    /* Poll for up to g_spin_us before sleeping: while a broadcast is arriving, the next
     * socket is usually ready within microseconds, and a sleep + wake-up per few sockets
     * (a context switch, costly on a VM) would dominate the client's cost per read and add
     * its wake-up delay to the measured latency. Bounded, so an idle client still sleeps. */
    int n = epoll_wait(g_epfd, evs, 4096, 0);
    if (n == 0 && timeout_ms > 0) {
        uint64_t start = now_ns(), end = start + (uint64_t)timeout_ms * 1000000u;
        uint64_t spin_end = start + (g_spinning ? (uint64_t)g_spin_us * 1000u : 0u);
        if (spin_end > end) spin_end = end;
        uint64_t t = start;
        while (n == 0 && t < spin_end) {
            n = epoll_wait(g_epfd, evs, 4096, 0);
            t = now_ns();
        }
        if (n == 0 && t < end) { /* sleep the rest of the timeout, to the nanosecond */
            struct timespec rest = {(time_t)((end - t) / 1000000000u), (long)((end - t) % 1000000000u)};
            n = epoll_pwait2(g_epfd, evs, 4096, &rest, NULL);
        }
    }
    g_waits++;
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == &g_stdin_mark) {
            g_stdin_ready = 1;
            continue;
        }
        on_event(evs[i].data.ptr, evs[i].events);
    }
}

static int start_connect(Conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        if (g_errors_printed++ < 5) fprintf(stderr, "loadclient: socket: %s\n", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    register_fd(c);
    long i = c - g_subs;
    if (g_nsrc > 1) {
        /* The port is picked at connect() time, unique per 4-tuple, not per source address */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % g_nsrc));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 && g_errors_printed++ < 5)
            fprintf(stderr, "loadclient: bind: %s\n", strerror(errno));
    }
    const struct sockaddr_in *to = (g_port2 && (i & 1)) ? &g_addr2 : &g_addr;
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
        if (g_errors_printed++ < 5) fprintf(stderr, "loadclient: connect: %s\n", strerror(errno));
        close(fd);
        c->fd = -1;
        return -1;
    }
    c->state = ST_CONNECTING;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    return 0;
}

static void print_common(void) {
    printf("\"established\":%ld,\"subscribed\":%ld,\"failed\":%ld,\"closed_by_peer\":%ld,"
           "\"pub_errors\":%ld,\"pub_reconnects\":%ld,\"unexpected_frames\":%llu,"
           "\"close_codes\":[",
           g_established, g_subscribed, g_failed, g_closed_by_peer, g_pub_errors, g_pub_reconnects,
           (unsigned long long)g_unexpected);
    for (int i = 0; i < g_nclose_codes; i++) printf("%s%d", i ? "," : "", g_close_codes[i]);
    printf("]}\n");
    fflush(stdout);
}

static uint64_t seconds_ns(double s) { return (uint64_t)(s * 1e9); }

static void cmd_connect(int conc, double limit_s) {
    uint64_t t0 = now_ns(), deadline = t0 + seconds_ns(limit_s);
    int next = 0;
    g_inflight = 0;
    g_last_event_ns = t0;
    while (g_established + g_failed < g_n && now_ns() < deadline) {
        while (g_inflight < conc && next < g_n) {
            if (start_connect(&g_subs[next++]) == 0)
                g_inflight++;
            else
                g_failed++;
        }
        pump(100);
    }
    double secs = (double)(g_last_event_ns - t0) / 1e9;
    printf("{\"phase\":\"connect\",\"seconds\":%.4f,\"rate\":%.1f,\"timed_out\":%d,", secs,
           secs > 0 ? (double)g_established / secs : 0.0, now_ns() >= deadline);
    print_common();
}

static void cmd_subscribe(int conc, double limit_s) {
    uint64_t t0 = now_ns(), deadline = t0 + seconds_ns(limit_s);
    int next = 0;
    long target = g_established;
    long failed0 = g_failed;
    g_inflight = 0;
    g_last_event_ns = t0;
    while (g_subscribed + (g_failed - failed0) < target && now_ns() < deadline) {
        while (g_inflight < conc && next < g_n) {
            Conn *c = &g_subs[next++];
            if (c->state != ST_OPEN) continue;
            c->state = ST_SUB_SENT;
            g_inflight++;
            send_text(c, g_sub_msg);
        }
        pump(100);
    }
    double secs = (double)(g_last_event_ns - t0) / 1e9;
    printf("{\"phase\":\"subscribe\",\"seconds\":%.4f,\"rate\":%.1f,\"timed_out\":%d,", secs,
           secs > 0 ? (double)g_subscribed / secs : 0.0, now_ns() >= deadline);
    print_common();
}

static void open_publishers(void) {
    static int opened;
    if (opened) return;
    opened = 1;
    for (int i = 0; i < g_npub; i++) open_publisher(&g_pubs[i]);
}

static Conn *idle_publisher(void) {
    for (int i = 0; i < g_npub; i++)
        if (g_pubs[i].fd >= 0 && !g_pubs[i].busy) return &g_pubs[i];
    return NULL;
}

/* Sends the next pre-signed request; returns its seq or -1 (no idle publisher / out). */
static long publish(uint64_t sent_ns) {
    if (g_next_seq >= g_nreq) return -1;
    Conn *c = idle_publisher();
    if (!c) return -1;
    long seq = g_next_seq++;
    g_sent_ns[seq] = sent_ns ? sent_ns : now_ns();
    c->busy = 1;
    if (send_all(c, g_req[seq], g_req_len[seq]) < 0) return -1;
    return seq;
}

static void cmd_warm(int count, double limit_s) {
    open_publishers();
    uint64_t t0 = now_ns();
    int done = 0;
    for (int i = 0; i < count; i++) {
        uint64_t deadline = now_ns() + seconds_ns(limit_s);
        long seq;
        while ((seq = publish(0)) < 0 && now_ns() < deadline) pump(10);
        if (seq < 0) break;
        while (g_seq_count[seq] < (uint32_t)g_subscribed && now_ns() < deadline) pump(10);
        if (g_seq_count[seq] >= (uint32_t)g_subscribed) done++;
    }
    printf("{\"phase\":\"warm\",\"messages\":%d,\"complete\":%d,\"seconds\":%.3f,", count, done,
           (double)(now_ns() - t0) / 1e9);
    print_common();
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double q) {
    if (!g_lat_n) return -1;
    size_t i = (size_t)(q * (double)(g_lat_n - 1) + 0.5);
    return g_lat[i] / 1000.0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void cmd_latency(double rate, double secs, double drain_s) {
    open_publishers();
    long nmsg = (long)(rate * secs + 0.5);
    if (g_next_seq + nmsg > g_nreq) nmsg = g_nreq - g_next_seq;
    long subs = g_subscribed;
    g_lat_cap = (size_t)nmsg * (size_t)subs;
    g_lat = realloc(g_lat, (g_lat_cap ? g_lat_cap : 1) * sizeof *g_lat);
    g_lat_n = 0;
    g_lat_lo = g_next_seq;
    g_lat_hi = g_next_seq + nmsg;
    g_lat_on = 1;
    g_spinning = 1;
    uint64_t period = (uint64_t)(1e9 / rate);
    uint64_t t0 = now_ns() + 10000000ull;
    long sent = 0;
    uint64_t drain_deadline = 0;
    long errors0 = g_pub_errors;
    for (;;) {
        uint64_t t = now_ns();
        /* open loop: message j is due at t0 + j*period; its latency counts from then */
        while (sent < nmsg && t >= t0 + (uint64_t)sent * period) {
            if (publish(t0 + (uint64_t)sent * period) < 0) break;
            sent++;
        }
        if (sent == nmsg && !drain_deadline) drain_deadline = t + seconds_ns(drain_s);
        if (sent == nmsg && (g_lat_n >= g_lat_cap || t > drain_deadline)) break;
        int wait = 5;
        if (sent < nmsg) {
            uint64_t due = t0 + (uint64_t)sent * period;
            wait = due > t ? (int)((due - t) / 1000000) : 0;
            if (wait > 5) wait = 5;
        }
        pump(wait);
    }
    g_lat_on = 0;
    g_spinning = 0;
    qsort(g_lat, g_lat_n, sizeof *g_lat, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < g_lat_n; i++) sum += g_lat[i];
    /* Spread of one broadcast: first to last delivery of a message that reached everyone.
     * One core writes to every socket in turn, so this is a floor under the max latency. */
    uint64_t *spread = calloc((size_t)(nmsg > 0 ? nmsg : 1), sizeof *spread);
    long nspread = 0;
    for (long q = g_lat_lo; q < g_lat_lo + sent; q++)
        if (subs > 0 && g_seq_count[q] >= (uint32_t)subs) spread[nspread++] = g_last_ns[q] - g_first_ns[q];
    qsort(spread, (size_t)nspread, sizeof *spread, cmp_u64);
    double spread_p50 = nspread ? spread[(nspread - 1) / 2] / 1e6 : -1.0;
    double spread_max = nspread ? spread[nspread - 1] / 1e6 : -1.0;
    free(spread);
    printf("{\"phase\":\"latency\",\"rate\":%.2f,\"messages\":%ld,\"expected\":%zu,"
           "\"received\":%zu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"mean_ms\":%.3f,\"complete_messages\":%ld,\"spread_p50_ms\":%.3f,"
           "\"spread_max_ms\":%.3f,\"phase_pub_errors\":%ld,",
           rate, sent, g_lat_cap, g_lat_n, pct(0.50), pct(0.90), pct(0.99), pct(1.0),
           g_lat_n ? sum / (double)g_lat_n / 1000.0 : -1.0, nspread, spread_p50, spread_max,
           g_pub_errors - errors0);
    print_common();
}

static void cmd_saturate(int k, double warm_s, double window_s, double drain_s) {
    open_publishers();
    long subs = g_subscribed;
    uint64_t t0 = now_ns();
    uint64_t wstart = 0, wend = 0, base = 0, reads0 = 0, waits0 = 0;
    uint64_t expected = 0, delivered0 = g_delivered;
    long sent = 0, errors0 = g_pub_errors;
    int exhausted = 0;
    for (;;) {
        uint64_t t = now_ns();
        if (!wstart && t >= t0 + (uint64_t)(warm_s * 1e9)) {
            wstart = t;
            base = g_delivered;
            reads0 = g_reads;
            waits0 = g_waits;
            printf("{\"phase\":\"sat_start\"}\n");
            fflush(stdout);
        }
        if (wstart && (t >= wstart + (uint64_t)(window_s * 1e9) || exhausted)) {
            wend = t;
            printf("{\"phase\":\"sat_end\"}\n");
            fflush(stdout);
            break;
        }
        /* closed loop: publish while fewer than k full broadcasts are outstanding */
        while ((int64_t)expected - (int64_t)(g_delivered - delivered0) + subs <= (int64_t)k * subs) {
            if (publish(0) < 0) {
                if (g_next_seq >= g_nreq) exhausted = 1;
                break;
            }
            expected += (uint64_t)subs;
            sent++;
        }
        pump(5);
    }
    uint64_t counted = g_delivered - base;
    uint64_t reads = g_reads - reads0, waits = g_waits - waits0;
    double secs = (double)(wend - wstart) / 1e9;
    /* drain so the next phase starts clean */
    uint64_t deadline = now_ns() + seconds_ns(drain_s);
    while (g_delivered - delivered0 < expected && now_ns() < deadline) pump(10);
    printf("{\"phase\":\"saturate\",\"k\":%d,\"window_s\":%.4f,\"deliveries\":%llu,"
           "\"rate\":%.1f,\"messages\":%ld,\"exhausted\":%d,\"drained\":%d,"
           "\"phase_pub_errors\":%ld,\"deliveries_per_read\":%.2f,\"reads_per_wait\":%.1f,",
           k, secs, (unsigned long long)counted, secs > 0 ? (double)counted / secs : 0.0, sent,
           exhausted, g_delivered - delivered0 >= expected, g_pub_errors - errors0,
           reads ? (double)counted / (double)reads : 0.0, waits ? (double)reads / (double)waits : 0.0);
    print_common();
}

/* Every published seq must reach every subscribed socket exactly once (cluster.py). */
static void cmd_verify(long seqs) {
    long complete = 0, short_seqs = 0, over = 0, first_short = -1;
    unsigned long long missing = 0, extra = 0;
    uint32_t subs = (uint32_t)g_subscribed;
    long upto = seqs > 0 ? (seqs < g_nreq ? seqs : g_nreq) : g_next_seq;
    if (seqs > 0) { /* read what arrived while this client sat idle: until 0.5 s quiet */
        uint64_t deadline = now_ns() + seconds_ns(30);
        unsigned long long seen = (unsigned long long)-1;
        while (seen != g_delivered && now_ns() < deadline) {
            seen = g_delivered;
            pump(500);
        }
    }
    for (long s = 0; s < upto; s++) {
        uint32_t c = g_seq_count[s];
        if (c == subs) {
            complete++;
        } else if (c < subs) {
            if (first_short < 0) first_short = s;
            short_seqs++;
            missing += subs - c;
        } else {
            over++;
            extra += c - subs;
        }
    }
    printf("{\"phase\":\"verify\",\"published\":%ld,\"complete\":%ld,\"short\":%ld,"
           "\"missing\":%llu,\"first_short\":%ld,\"over\":%ld,\"extra\":%llu,"
           "\"delivered\":%llu,",
           upto, complete, short_seqs, missing, first_short, over, extra,
           (unsigned long long)g_delivered);
    print_common();
}

static void load_requests(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    if (fscanf(f, "%ld\n", &g_nreq) != 1) die("request file header");
    g_req = calloc((size_t)g_nreq, sizeof *g_req);
    g_req_len = calloc((size_t)g_nreq, sizeof *g_req_len);
    for (long i = 0; i < g_nreq; i++) {
        size_t len;
        if (fscanf(f, "%zu\n", &len) != 1) die("request length");
        g_req[i] = malloc(len);
        if (fread(g_req[i], 1, len, f) != len) die("request body");
        g_req_len[i] = len;
    }
    fclose(f);
    g_sent_ns = calloc((size_t)g_nreq, sizeof *g_sent_ns);
    g_seq_count = calloc((size_t)g_nreq, sizeof *g_seq_count);
    g_first_ns = calloc((size_t)g_nreq, sizeof *g_first_ns);
    g_last_ns = calloc((size_t)g_nreq, sizeof *g_last_ns);
}

/* The next command line (at most cap - 1 bytes kept), 0 at end of input. While it waits the
 * sockets are still served: an idle connection must answer the server's pusher:ping (sent
 * after activity_timeout, 120 s, of silence) or be closed after the pong wait, and in a long
 * bench/hold.py run most clients sit idle for minutes while another one publishes. */
static int read_command(char *line, size_t cap) {
    static char buf[4096];
    static size_t len;
    for (;;) {
        char *nl = memchr(buf, '\n', len);
        if (nl) {
            size_t n = (size_t)(nl - buf) + 1, k = n < cap ? n : cap - 1;
            memcpy(line, buf, k);
            line[k] = 0;
            memmove(buf, buf + n, len - n);
            len -= n;
            return 1;
        }
        if (len == sizeof buf) len = 0; /* an overlong line is dropped */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &g_stdin_mark};
        if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, 0, &ev) == 0) { /* not for a regular file */
            g_stdin_ready = 0;
            while (!g_stdin_ready) pump(1000);
            epoll_ctl(g_epfd, EPOLL_CTL_DEL, 0, NULL);
        }
        ssize_t r = read(0, buf + len, sizeof buf - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        len += (size_t)r;
    }
}

static void usage(void) {
    fprintf(stderr, "usage: loadclient [-P pusher|socketio] [-2 PORT2] [-S SOURCES] [-W SPIN_US] "
                    "HOST PORT APP_KEY N REQUEST_FILE N_PUBLISHERS\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "P:2:S:W:")) != -1) {
        if (opt == 'P' && !strcmp(optarg, "pusher"))
            g_proto = P_PUSHER;
        else if (opt == 'P' && !strcmp(optarg, "socketio"))
            g_proto = P_SOCKETIO;
        else if (opt == '2')
            g_port2 = atoi(optarg);
        else if (opt == 'S')
            g_nsrc = atoi(optarg);
        else if (opt == 'W')
            g_spin_us = atoi(optarg);
        else
            usage();
    }
    if (argc - optind != 6) usage();
    argv += optind - 1;
    g_host = argv[1];
    g_port = atoi(argv[2]);
    g_key = argv[3];
    g_n = atoi(argv[4]);
    g_npub = atoi(argv[6]);
    if (g_nsrc <= 0) g_nsrc = 1 + (g_n > 20000 ? (g_n - 1) / 20000 : 0);
    load_requests(argv[5]);

    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)g_port);
    if (inet_pton(AF_INET, g_host, &g_addr.sin_addr) != 1) die("host");
    g_addr2 = g_addr;
    g_addr2.sin_port = htons((uint16_t)g_port2);
    char path[256];
    if (g_proto == P_SOCKETIO) {
        snprintf(path, sizeof path, "/socket.io/?EIO=4&transport=websocket");
        g_sub_msg = "420[\"subscribe\",\"bench\"]";
    } else {
        snprintf(path, sizeof path, "/app/%s?protocol=7&client=bench&version=1", g_key);
        g_sub_msg = "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"bench\"}}";
    }
    g_handshake_len = (size_t)snprintf(
        g_handshake, sizeof g_handshake,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        path, g_host, g_port);

    g_epfd = epoll_create1(0);
    if (g_epfd < 0) die("epoll_create1");
    g_fdmap_cap = g_n + g_npub + 1024;
    g_fdmap = calloc((size_t)g_fdmap_cap, sizeof *g_fdmap);
    g_subs = calloc((size_t)g_n, sizeof *g_subs);
    g_pubs = calloc((size_t)g_npub, sizeof *g_pubs);
    for (int i = 0; i < g_n; i++) {
        g_subs[i].fd = -1;
        g_subs[i].kind = K_SUB;
    }
    for (int i = 0; i < g_npub; i++) g_pubs[i].fd = -1;

    char line[256];
    while (read_command(line, sizeof line)) {
        char cmd[32] = {0};
        double a = 0, b = 0, c = 0, d = 0;
        int nf = sscanf(line, "%31s %lf %lf %lf %lf", cmd, &a, &b, &c, &d);
        if (nf < 1) continue;
        if (!strcmp(cmd, "connect")) {
            cmd_connect(a > 0 ? (int)a : 200, b > 0 ? b : 120);
        } else if (!strcmp(cmd, "subscribe")) {
            cmd_subscribe(a > 0 ? (int)a : 200, b > 0 ? b : 120);
        } else if (!strcmp(cmd, "warm")) {
            cmd_warm(a > 0 ? (int)a : 1, b > 0 ? b : 10);
        } else if (!strcmp(cmd, "latency")) {
            cmd_latency(a, b, c > 0 ? c : 15);
        } else if (!strcmp(cmd, "saturate")) {
            cmd_saturate((int)a, b, c, d > 0 ? d : 15);
        } else if (!strcmp(cmd, "verify")) {
            cmd_verify(a > 0 ? (long)a : 0);
        } else if (!strcmp(cmd, "quit")) {
            break;
        } else {
            printf("{\"phase\":\"error\",\"message\":\"unknown command\"}\n");
            fflush(stdout);
        }
    }
    for (int i = 0; i < g_n; i++) close_conn(&g_subs[i], 0);
    for (int i = 0; i < g_npub; i++) close_conn(&g_pubs[i], 0);
    printf("{\"phase\":\"quit\"}\n");
    fflush(stdout);
    return 0;
}
