// A TCP delay line for the benchmarks: listens on 127.0.0.1, forwards every connection to a
// server on 127.0.0.1, and holds each segment it reads, in either direction, for DELAY
// microseconds (half the round trip) before writing it on. Segments stay pipelined: a stream
// moves at full speed, every byte arriving DELAY later (a delay line, not stop-and-wait). Only
// when more than kQueueCap bytes wait in one direction does it stop reading from that side,
// and TCP's own flow control takes over.
//
//   delay_line TARGET_PORT DELAY_US     prints "PORT\n" once listening, then serves until killed
//
// One thread, epoll; compiled by tests/bench/delay_line.py with `cc -O2`.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kReadSize = 256 * 1024, kQueueCap = 32 * 1024 * 1024, kMaxEvents = 64 };

struct segment {
  struct segment* next;
  int64_t due_ns;
  size_t length, sent;
  char data[];
};

struct side;
struct pipe_dir {  // bytes read from `from`, written to `to` once due
  struct side* from;
  struct side* to;
  struct segment *head, *tail;
  size_t queued;
  int eof;  // `from` closed its end: shut `to`'s write side once the queue is empty
};

struct side {
  int fd;
  struct connection* conn;
  struct pipe_dir* out;  // what this side reads
  struct pipe_dir* in;   // what is written to this side
  uint32_t events;
};

struct connection {
  struct side client, server;
  struct pipe_dir up, down;  // client→server, server→client
  struct connection *prev, *next;
  int closing;
};

static int64_t delay_ns;
static int epfd;
static struct connection* connections;
static struct connection* dead;  // closed, freed once no event of this round can name them

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_events(struct side* s, uint32_t events) {
  if (s->fd < 0 || s->events == events) return;
  struct epoll_event ev = {.events = events, .data.ptr = s};
  epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
  s->events = events;
}

// Reading stops while the queue is full or the peer closed; writing is watched while due bytes wait.
static void update_events(struct side* s, int64_t now) {
  uint32_t events = 0;
  if (!s->out->eof && s->out->queued < kQueueCap) events |= EPOLLIN;
  if (s->in->head && s->in->head->due_ns <= now) events |= EPOLLOUT;
  set_events(s, events);
}

static void free_queue(struct pipe_dir* p) {
  while (p->head) {
    struct segment* s = p->head;
    p->head = s->next;
    free(s);
  }
  p->tail = NULL;
  p->queued = 0;
}

static void close_connection(struct connection* c) {
  if (c->closing) return;
  c->closing = 1;
  close(c->client.fd);
  close(c->server.fd);
  c->client.fd = c->server.fd = -1;
  free_queue(&c->up);
  free_queue(&c->down);
  if (c->prev)
    c->prev->next = c->next;
  else
    connections = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = dead;
  dead = c;
}

static void flush(struct pipe_dir* p, int64_t now) {
  while (p->head && p->head->due_ns <= now) {
    struct segment* s = p->head;
    ssize_t n = write(p->to->fd, s->data + s->sent, s->length - s->sent);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      close_connection(p->from->conn);
      return;
    }
    s->sent += (size_t)n;
    p->queued -= (size_t)n;
    if (s->sent < s->length) return;
    p->head = s->next;
    if (!p->head) p->tail = NULL;
    free(s);
  }
  if (!p->head && p->eof) shutdown(p->to->fd, SHUT_WR);
}

static void pull(struct side* s, int64_t now) {
  struct pipe_dir* p = s->out;
  if (p->eof) return;
  while (p->queued < kQueueCap) {
    struct segment* seg = malloc(sizeof *seg + kReadSize);
    if (!seg) return;
    ssize_t n = read(s->fd, seg->data, kReadSize);
    if (n <= 0) {
      free(seg);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (n < 0) {
        close_connection(s->conn);
        return;
      }
      p->eof = 1;  // the write side is shut once the queue is drained (flush)
      if (!p->head) shutdown(p->to->fd, SHUT_WR);
      return;
    }
    if ((size_t)n < kReadSize / 2) {
      struct segment* smaller = realloc(seg, sizeof *seg + (size_t)n);
      if (smaller) seg = smaller;
    }
    seg->next = NULL;
    seg->due_ns = now + delay_ns;
    seg->length = (size_t)n;
    seg->sent = 0;
    if (p->tail)
      p->tail->next = seg;
    else
      p->head = seg;
    p->tail = seg;
    p->queued += (size_t)n;
    if ((size_t)n < kReadSize) return;
  }
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void accept_one(int listener, int target_port) {
  int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (client < 0) return;
  int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)target_port)};
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (server < 0 || connect(server, (struct sockaddr*)&to, sizeof to) != 0) {
    close(client);
    if (server >= 0) close(server);
    return;
  }
  nodelay(client);
  nodelay(server);
  struct connection* c = calloc(1, sizeof *c);
  c->client = (struct side){.fd = client, .conn = c, .out = &c->up, .in = &c->down};
  c->server = (struct side){.fd = server, .conn = c, .out = &c->down, .in = &c->up};
  c->up = (struct pipe_dir){.from = &c->client, .to = &c->server};
  c->down = (struct pipe_dir){.from = &c->server, .to = &c->client};
  c->next = connections;
  if (connections) connections->prev = c;
  connections = c;
  struct side* sides[2] = {&c->client, &c->server};
  for (int i = 0; i < 2; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = sides[i]};
    sides[i]->events = EPOLLIN;
    epoll_ctl(epfd, EPOLL_CTL_ADD, sides[i]->fd, &ev);
  }
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s TARGET_PORT DELAY_US\n", argv[0]);
    return 2;
  }
  int target_port = atoi(argv[1]);
  delay_ns = atoll(argv[2]) * 1000;
  signal(SIGPIPE, SIG_IGN);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(listener, 512) != 0 ||
      getsockname(listener, (struct sockaddr*)&addr, &len) != 0) {
    perror("delay_line: listen");
    return 1;
  }
  printf("%d\n", ntohs(addr.sin_port));
  fflush(stdout);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  static char listener_tag;
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
  epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &lev);
  struct epoll_event events[kMaxEvents];
  for (;;) {
    // Sleep until the earliest segment is due (nanoseconds: a 0.25 ms delay needs better than ms).
    int64_t now = now_ns(), next = -1;
    for (struct connection* c = connections; c; c = c->next) {
      struct pipe_dir* dirs[2] = {&c->up, &c->down};
      for (int i = 0; i < 2; i++) {
        if (dirs[i]->head && (next < 0 || dirs[i]->head->due_ns < next)) next = dirs[i]->head->due_ns;
      }
    }
    struct timespec timeout, *wait = NULL;
    if (next >= 0) {
      int64_t left = next > now ? next - now : 0;
      timeout.tv_sec = left / 1000000000;
      timeout.tv_nsec = left % 1000000000;
      wait = &timeout;
    }
    int n = epoll_pwait2(epfd, events, kMaxEvents, wait, NULL);
    if (n < 0 && errno != EINTR) {
      perror("delay_line: epoll");
      return 1;
    }
    now = now_ns();
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == &listener_tag) {
        accept_one(listener, target_port);
        continue;
      }
      struct side* s = events[i].data.ptr;
      if (s->conn->closing) continue;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) pull(s, now);
      if (!s->conn->closing && (events[i].events & EPOLLOUT)) flush(s->in, now);
    }
    // Due segments go out; closed connections are freed once no event can name them.
    struct connection* c = connections;
    while (c) {
      struct connection* next_c = c->next;
      flush(&c->up, now);
      if (!c->closing) flush(&c->down, now);
      // Both ways ended and drained: nothing more can move.
      if (!c->closing && c->up.eof && c->down.eof && !c->up.head && !c->down.head) close_connection(c);
      if (!c->closing) {
        update_events(&c->client, now);
        update_events(&c->server, now);
      }
      c = next_c;
    }
    while (dead) {
      struct connection* d = dead;
      dead = d->next;
      free(d);
    }
  }
}
