/*
 * Fan-out load client for bench/fanout.py (compiled by the harness into bench/results/).
 *
 * One process, one epoll loop (level-triggered, non-blocking sockets) holding N Pusher
 * subscriber connections plus a few keep-alive HTTP connections that publish through the
 * REST API. C rather than Python so the client is not the bottleneck; the harness records
 * its CPU anyway.
 *
 *   loadclient HOST PORT APP_KEY N REQUEST_FILE N_PUBLISHERS
 *
 * REQUEST_FILE holds pre-signed HTTP requests ("M\n" then M times "LEN\n" + LEN bytes);
 * request i publishes a message whose data carries "seq":i, so the send time of every
 * delivery is known here and latency = receive time - send time (CLOCK_MONOTONIC).
 *
 * Commands, one per line on stdin; each answers with one JSON line on stdout:
 *   connect C                      open N sockets, <= C handshakes in flight, until
 *                                  pusher:connection_established on each
 *   subscribe C                    pusher:subscribe to "bench" on each, <= C in flight
 *   warm COUNT                     COUNT publishes in turn, each waits for all deliveries
 *   latency RATE SECONDS           open loop at RATE msg/s; latency from scheduled send time
 *   saturate K WARM_S WINDOW_S     closed loop, <= K broadcasts in flight; prints a
 *                                  sat_start and a sat_end line around the measured window
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

static char g_handshake[512];
static size_t g_handshake_len;
static unsigned char g_rbuf[262144];

/* counters */
static long g_established, g_subscribed, g_failed, g_closed_by_peer, g_inflight;
static uint64_t g_last_event_ns;
static uint64_t g_delivered;     /* deliveries of "seq" messages, all phases */
static uint64_t g_unexpected;    /* other text frames on subscribed sockets */
static long g_pub_errors, g_pub_done;
static int g_close_codes[8];
static int g_nclose_codes;
static int g_errors_printed;

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
static int send_text(Conn *c, const char *msg, uint8_t opcode) {
    unsigned char f[256];
    size_t n = strlen(msg);
    if (n > 125) return -1;
    f[0] = 0x80 | opcode;
    f[1] = 0x80 | (unsigned char)n;
    memset(f + 2, 0, 4);
    memcpy(f + 6, msg, n);
    return send_all(c, f, n + 6);
}

static void on_delivery(long seq, uint64_t t) {
    g_delivered++;
    if (seq < 0 || seq >= g_nreq) return;
    g_seq_count[seq]++;
    if (g_lat_on && seq >= g_lat_lo && seq < g_lat_hi && g_lat_n < g_lat_cap) {
        uint64_t sent = g_sent_ns[seq];
        g_lat[g_lat_n++] = t > sent ? (uint32_t)((t - sent) / 1000) : 0;
    }
}

static void on_text(Conn *c, const char *p, size_t n) {
    if (c->state == ST_SUBSCRIBED) {
        /* {"event":"e","channel":"bench","data":"{\"seq\":123,...}"} */
        const char *s = memmem(p, n, "seq\\\":", 6);
        if (s) {
            s += 6;
            long seq = 0;
            while (s < p + n && *s >= '0' && *s <= '9') seq = seq * 10 + (*s++ - '0');
            on_delivery(seq, now_ns());
            return;
        }
    }
    if (memmem(p, n, "\"pusher:ping\"", 13)) {
        send_text(c, "{\"event\":\"pusher:pong\",\"data\":{}}", 0x1);
        return;
    }
    if (c->state == ST_WAIT_ESTABLISHED && memmem(p, n, "pusher:connection_established", 29)) {
        c->state = ST_OPEN;
        g_established++;
        g_inflight--;
        g_last_event_ns = now_ns();
        return;
    }
    if (c->state == ST_SUB_SENT && memmem(p, n, "pusher_internal:subscription_succeeded", 38)) {
        c->state = ST_SUBSCRIBED;
        g_subscribed++;
        g_inflight--;
        g_last_event_ns = now_ns();
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
            char pong[126];
            memcpy(pong, payload, plen);
            pong[plen] = 0;
            send_text(c, pong, 0xA);
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
        if (r <= 0) {
            close_conn(c, 1);
            return;
        }
        if (c->kind == K_SUB)
            handle_sub_data(c, g_rbuf, (size_t)r);
        else
            handle_pub_data(c, g_rbuf, (size_t)r);
        /* level-triggered: one read per ready socket per loop turn keeps things fair */
        return;
    }
}

static void pump(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(g_epfd, evs, 1024, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_wait");
    }
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
}

static void register_fd(Conn *c) {
    if (c->fd >= g_fdmap_cap) {
        fprintf(stderr, "loadclient: fd %d over table size\n", c->fd);
        exit(1);
    }
    g_fdmap[c->fd] = c;
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
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0 && errno != EINPROGRESS) {
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
           "\"pub_errors\":%ld,\"unexpected_frames\":%llu,\"close_codes\":[",
           g_established, g_subscribed, g_failed, g_closed_by_peer, g_pub_errors,
           (unsigned long long)g_unexpected);
    for (int i = 0; i < g_nclose_codes; i++) printf("%s%d", i ? "," : "", g_close_codes[i]);
    printf("]}\n");
    fflush(stdout);
}

static void cmd_connect(int conc) {
    uint64_t t0 = now_ns(), deadline = t0 + 120ull * 1000000000ull;
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
    printf("{\"phase\":\"connect\",\"seconds\":%.4f,\"rate\":%.1f,", secs,
           secs > 0 ? (double)g_established / secs : 0.0);
    print_common();
}

static void cmd_subscribe(int conc) {
    static const char *sub = "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"bench\"}}";
    uint64_t t0 = now_ns(), deadline = t0 + 120ull * 1000000000ull;
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
            send_text(c, sub, 0x1);
        }
        pump(100);
    }
    double secs = (double)(g_last_event_ns - t0) / 1e9;
    printf("{\"phase\":\"subscribe\",\"seconds\":%.4f,\"rate\":%.1f,", secs,
           secs > 0 ? (double)g_subscribed / secs : 0.0);
    print_common();
}

static void open_publishers(void) {
    static int opened;
    if (opened) return;
    opened = 1;
    for (int i = 0; i < g_npub; i++) {
        Conn *c = &g_pubs[i];
        c->kind = K_PUB;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0)
            die("publisher connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        c->fd = fd;
        c->state = ST_OPEN;
        register_fd(c);
        watch(c, EPOLLIN, EPOLL_CTL_ADD);
    }
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

static void cmd_warm(int count) {
    open_publishers();
    uint64_t t0 = now_ns();
    int done = 0;
    for (int i = 0; i < count; i++) {
        uint64_t deadline = now_ns() + 10ull * 1000000000ull;
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

static void cmd_latency(double rate, double secs) {
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
        if (sent == nmsg && !drain_deadline) drain_deadline = t + 15ull * 1000000000ull;
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
    qsort(g_lat, g_lat_n, sizeof *g_lat, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < g_lat_n; i++) sum += g_lat[i];
    printf("{\"phase\":\"latency\",\"rate\":%.2f,\"messages\":%ld,\"expected\":%zu,"
           "\"received\":%zu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"mean_ms\":%.3f,\"phase_pub_errors\":%ld,",
           rate, sent, g_lat_cap, g_lat_n, pct(0.50), pct(0.90), pct(0.99), pct(1.0),
           g_lat_n ? sum / (double)g_lat_n / 1000.0 : -1.0, g_pub_errors - errors0);
    print_common();
}

static void cmd_saturate(int k, double warm_s, double window_s) {
    open_publishers();
    long subs = g_subscribed;
    uint64_t t0 = now_ns();
    uint64_t wstart = 0, wend = 0, base = 0;
    uint64_t expected = 0, delivered0 = g_delivered;
    long sent = 0, errors0 = g_pub_errors;
    int exhausted = 0;
    for (;;) {
        uint64_t t = now_ns();
        if (!wstart && t >= t0 + (uint64_t)(warm_s * 1e9)) {
            wstart = t;
            base = g_delivered;
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
    double secs = (double)(wend - wstart) / 1e9;
    /* drain so the next phase starts clean */
    uint64_t deadline = now_ns() + 15ull * 1000000000ull;
    while (g_delivered - delivered0 < expected && now_ns() < deadline) pump(10);
    printf("{\"phase\":\"saturate\",\"k\":%d,\"window_s\":%.4f,\"deliveries\":%llu,"
           "\"rate\":%.1f,\"messages\":%ld,\"exhausted\":%d,\"drained\":%d,"
           "\"phase_pub_errors\":%ld,",
           k, secs, (unsigned long long)counted, secs > 0 ? (double)counted / secs : 0.0, sent,
           exhausted, g_delivered - delivered0 >= expected, g_pub_errors - errors0);
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
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: loadclient HOST PORT APP_KEY N REQUEST_FILE N_PUBLISHERS\n");
        return 2;
    }
    g_host = argv[1];
    g_port = atoi(argv[2]);
    g_key = argv[3];
    g_n = atoi(argv[4]);
    g_npub = atoi(argv[6]);
    load_requests(argv[5]);

    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)g_port);
    if (inet_pton(AF_INET, g_host, &g_addr.sin_addr) != 1) die("host");
    g_handshake_len = (size_t)snprintf(
        g_handshake, sizeof g_handshake,
        "GET /app/%s?protocol=7&client=bench&version=1 HTTP/1.1\r\nHost: %s:%d\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        g_key, g_host, g_port);

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
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = {0};
        double a = 0, b = 0, c = 0;
        int nf = sscanf(line, "%31s %lf %lf %lf", cmd, &a, &b, &c);
        if (nf < 1) continue;
        if (!strcmp(cmd, "connect")) {
            cmd_connect(a > 0 ? (int)a : 200);
        } else if (!strcmp(cmd, "subscribe")) {
            cmd_subscribe(a > 0 ? (int)a : 200);
        } else if (!strcmp(cmd, "warm")) {
            cmd_warm(a > 0 ? (int)a : 1);
        } else if (!strcmp(cmd, "latency")) {
            cmd_latency(a, b);
        } else if (!strcmp(cmd, "saturate")) {
            cmd_saturate((int)a, b, c);
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
