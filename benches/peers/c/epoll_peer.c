/* A peer for benches/compare.sh: revecho's protocol in hand-written C.
 *
 *   gcc -O2 -o epoll_peer epoll_peer.c
 *   ./epoll_peer [--listen 127.0.0.1:PORT] [--framing burst|eof] [--linger]
 *
 * One thread, one edge-triggered epoll set. Each socket is registered once
 * for input and output (as nginx does), so interest never changes and no
 * epoll_ctl follows the ADD; close() removes the socket from the set.
 * burst: the message is whatever has arrived when read() says EAGAIN.
 * eof: the message is everything up to the client's end of stream.
 * The reply is the message reversed. Then either a plain close, or with
 * --linger revecho's lingering close: shutdown(SHUT_WR), read and discard
 * until the client's end of stream, close. Prints "listening on ADDR". */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum state { READING, WRITING, DRAINING };
struct conn {
    int fd;
    enum state state;
    int saw_eof;
    char *buf;
    size_t len, cap, sent;
};

static int eof_framing, linger;
#define MAX_MESSAGE (16u << 20)

static void finish(struct conn *c) {
    close(c->fd); /* also leaves the epoll set: nothing else holds it */
    free(c->buf);
    free(c);
}

/* Lingering: reads and discards until the client's end of stream. */
static void drain(struct conn *c) {
    char discard[4096];
    for (;;) {
        ssize_t n = read(c->fd, discard, sizeof discard);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        finish(c); /* end of stream or error */
        return;
    }
}

/* Writes the rest of the reply; then closes or starts the lingering close. */
static void reply(struct conn *c) {
    while (c->sent < c->len) {
        ssize_t n = write(c->fd, c->buf + c->sent, c->len - c->sent);
        if (n > 0) { c->sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) { c->state = WRITING; return; }
        finish(c);
        return;
    }
    if (!linger || c->saw_eof) { finish(c); return; }
    shutdown(c->fd, SHUT_WR);
    c->state = DRAINING;
    drain(c);
}

static void on_readable(struct conn *c) {
    for (;;) {
        if (c->len == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 16384;
            if (cap > MAX_MESSAGE) { finish(c); return; }
            char *grown = realloc(c->buf, cap);
            if (!grown) { finish(c); return; }
            c->buf = grown;
            c->cap = cap;
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n > 0) { c->len += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (eof_framing || c->len == 0) return; /* wait for more */
            break;                                  /* burst: drained */
        }
        if (n < 0 || c->len == 0) { finish(c); return; }
        c->saw_eof = 1; /* end of stream: the eof message is complete */
        break;
    }
    for (size_t i = 0, j = c->len - 1; i < j; i++, j--) {
        char t = c->buf[i]; c->buf[i] = c->buf[j]; c->buf[j] = t;
    }
    c->state = WRITING;
    reply(c);
}

static void on_event(struct conn *c, unsigned events) {
    if (c->state == READING && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
    else if (c->state == WRITING && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) reply(c);
    else if (c->state == DRAINING && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) drain(c);
}

int main(int argc, char **argv) {
    const char *listen_at = "127.0.0.1:0";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) listen_at = argv[++i];
        else if (!strcmp(argv[i], "--framing") && i + 1 < argc) eof_framing = !strcmp(argv[++i], "eof");
        else if (!strcmp(argv[i], "--linger")) linger = 1;
        else { fprintf(stderr, "usage: %s [--listen HOST:PORT] [--framing burst|eof] [--linger]\n", argv[0]); return 2; }
    }
    char host[64];
    const char *colon = strrchr(listen_at, ':');
    if (!colon || (size_t)(colon - listen_at) >= sizeof host) { fprintf(stderr, "bad address %s\n", listen_at); return 2; }
    memcpy(host, listen_at, (size_t)(colon - listen_at));
    host[colon - listen_at] = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); return 2; }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t addr_len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1024) ||
        getsockname(listener, (struct sockaddr *)&addr, &addr_len)) { perror("listen"); return 1; }
    char shown[INET_ADDRSTRLEN];
    printf("listening on %s:%d\n", inet_ntop(AF_INET, &addr.sin_addr, shown, sizeof shown), ntohs(addr.sin_port));
    fflush(stdout);

    int epoll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL}, ready[256];
    epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event);
    for (;;) {
        int count = epoll_wait(epoll, ready, 256, -1);
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < count; i++) {
            if (ready[i].data.ptr) { on_event(ready[i].data.ptr, ready[i].events); continue; }
            for (;;) { /* accept until EAGAIN */
                int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0) break; /* EAGAIN, or out of descriptors: wait for the next edge */
                struct conn *c = calloc(1, sizeof *c);
                if (!c) { close(fd); continue; }
                c->fd = fd;
                struct epoll_event client = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
                if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &client)) finish(c);
            }
        }
    }
}
