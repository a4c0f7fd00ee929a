/* The TCP baselines the multi-host numbers are compared with, between the
 * same two namespaces as the verbs programs:
 *   tcp_probe server PORT                    serves both modes below
 *   tcp_probe stream HOST PORT BYTES SECONDS one-way stream in BYTES writes: MB/s
 *   tcp_probe rr HOST PORT BYTES ITERATIONS  request/response ping-pong: us per round trip
 *   tcp_probe stream-zc HOST PORT BYTES SECONDS  the stream with MSG_ZEROCOPY sends: MB/s,
 *                                            and how many of them the kernel copied anyway
 *   tcp_probe stream-uring HOST PORT BYTES SECONDS DEPTH [zc]  the stream sent through
 *                                            io_uring, DEPTH sends in flight (IORING_OP_SEND,
 *                                            or IORING_OP_SEND_ZC with zc): MB/s, and how
 *                                            many zero-copy sends the kernel copied anyway
 *                                            (zc: Linux 6.2 or later, for that count)
 * Each stream mode also prints the sender's CPU time (user + system) per GB.
 * TCP_NODELAY on both ends (as the routers' links). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBURING
#include <liburing.h>
/* Linux 6.2's (Debian 12's headers are 6.1's): a SEND_ZC's notification
 * says whether the kernel copied the data after all. */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif
#endif

#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int full(int fd, char* buf, size_t n, int writing) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

/* MSG_ZEROCOPY completions (Documentation/networking/msg_zerocopy.rst):
 * each notification covers sends [ee_info, ee_data]; ee_code says the
 * kernel copied them after all (a local receiver: veth, loopback). Returns
 * how many sends completed; adds those copied to *copied. */
static long zerocopy_completions(int fd, long* copied) {
  long done = 0;
  for (;;) {
    char control[128];
    struct msghdr m = {.msg_control = control, .msg_controllen = sizeof control};
    if (recvmsg(fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return done;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
      struct sock_extended_err e;
      memcpy(&e, CMSG_DATA(c), sizeof e);
      if (e.ee_origin != SO_EE_ORIGIN_ZEROCOPY) continue;
      long n = (long)(e.ee_data - e.ee_info) + 1;
      done += n;
      if (e.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) *copied += n;
    }
  }
}

/* This process's CPU time so far (all threads), seconds. */
static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

#ifdef HAVE_LIBURING
/* Queues one whole send (MSG_WAITALL) of slot `slot`. */
static void queue_send(struct io_uring* ring, int s, char* bufs, unsigned size, unsigned slot, int zc) {
  struct io_uring_sqe* e = io_uring_get_sqe(ring);
  if (zc)
    io_uring_prep_send_zc(e, s, bufs + (size_t)slot * size, size, MSG_WAITALL, IORING_SEND_ZC_REPORT_USAGE);
  else
    io_uring_prep_send(e, s, bufs + (size_t)slot * size, size, MSG_WAITALL);
  io_uring_sqe_set_data64(e, slot);
}

/* The stream through io_uring: `depth` sends of `size` bytes in flight,
 * each whole (MSG_WAITALL), resubmitted as each completes. With zc, a
 * SEND_ZC's buffer is the kernel's until its notification (a second CQE,
 * IORING_CQE_F_NOTIF), whose result says whether the kernel copied after
 * all (IORING_NOTIF_USAGE_ZC_COPIED); a send's slot is reused only then. */
static int stream_uring(int s, unsigned size, double seconds, unsigned depth, int zc, double* bytes, long* copied,
                        long* notified) {
  struct io_uring ring;
  if (io_uring_queue_init(2 * depth, &ring, 0) != 0) return -1;
  char* bufs = calloc(depth, size);
  if (bufs == NULL) return -1;
  for (unsigned i = 0; i < depth; ++i) queue_send(&ring, s, bufs, size, i, zc);
  io_uring_submit(&ring);
  unsigned busy = depth; /* slots whose send (and, zc, notification) is outstanding */
  double start = now();
  int stopping = 0;
  while (busy > 0) {
    struct io_uring_cqe* c;
    if (io_uring_wait_cqe(&ring, &c) != 0) return -1;
    unsigned slot = (unsigned)io_uring_cqe_get_data64(c);
    int res = c->res;
    unsigned flags = c->flags;
    io_uring_cqe_seen(&ring, c);
    if (flags & IORING_CQE_F_NOTIF) { /* the kernel is done with the buffer */
      ++*notified;
      if ((unsigned)res & IORING_NOTIF_USAGE_ZC_COPIED) ++*copied;
    } else {
      if (res < 0) {
        fprintf(stderr, "io_uring send: %s\n", strerror(-res));
        return -1;
      }
      *bytes += res;
      if (flags & IORING_CQE_F_MORE) continue; /* its notification follows: the slot is not free yet */
    }
    --busy;
    stopping = stopping || now() - start >= seconds;
    if (stopping) continue;
    queue_send(&ring, s, bufs, size, slot, zc);
    ++busy;
    io_uring_submit(&ring);
  }
  io_uring_queue_exit(&ring);
  free(bufs);
  return 0;
}
#endif

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int main(int argc, char** argv) {
  if (argc >= 3 && strcmp(argv[1], "server") == 0) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 4) != 0) {
      perror("bind/listen");
      return 1;
    }
    for (;;) {
      int c = accept(l, NULL, NULL);
      if (c < 0) continue;
      nodelay(c);
      /* header: mode (0 stream, 1 rr), message size */
      unsigned hdr[2];
      if (full(c, (char*)hdr, sizeof hdr, 0) != 0 || hdr[1] == 0 || hdr[1] > (1u << 24)) {
        close(c);
        continue;
      }
      char* buf = malloc(hdr[1]);
      if (hdr[0] == 0) {
        while (read(c, buf, hdr[1]) > 0) {
        }
      } else {
        while (full(c, buf, hdr[1], 0) == 0 && full(c, buf, hdr[1], 1) == 0) {
        }
      }
      free(buf);
      close(c);
    }
  }
  if (argc < 6) {
    fprintf(stderr,
            "usage: tcp_probe server PORT | stream HOST PORT BYTES SECONDS | stream-zc HOST PORT BYTES SECONDS"
            " | stream-uring HOST PORT BYTES SECONDS DEPTH [zc] | rr HOST PORT BYTES ITERATIONS\n");
    return 2;
  }
  int rr = strcmp(argv[1], "rr") == 0;
  int zc = strcmp(argv[1], "stream-zc") == 0;
  int uring = strcmp(argv[1], "stream-uring") == 0;
  unsigned depth = uring && argc > 6 ? (unsigned)atoi(argv[6]) : 1;
  int uring_zc = uring && argc > 7 && strcmp(argv[7], "zc") == 0;
  if (uring && (depth == 0 || depth > 64)) {
    fprintf(stderr, "tcp_probe: DEPTH is 1 to 64\n");
    return 2;
  }
  unsigned size = (unsigned)atoi(argv[4]);
  double amount = atof(argv[5]);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
  inet_pton(AF_INET, argv[2], &a.sin_addr);
  if (connect(s, (struct sockaddr*)&a, sizeof a) != 0) {
    perror("connect");
    return 1;
  }
  nodelay(s);
  int one = 1;
  if (zc && setsockopt(s, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) != 0) {
    perror("SO_ZEROCOPY");
    return 1;
  }
  unsigned hdr[2] = {(unsigned)rr, size};
  full(s, (char*)hdr, sizeof hdr, 1);
  char* buf = calloc(1, size);
  double start = now(), cpu = cpu_seconds();
  if (uring) {
#ifdef HAVE_LIBURING
    double bytes = 0;
    long copied = 0, notified = 0;
    if (stream_uring(s, size, amount, depth, uring_zc, &bytes, &copied, &notified) != 0) return 1;
    double elapsed = now() - start;
    printf("stream-uring %u B sends, %u in flight%s: %.1f MB/s, %.2f s CPU per GB, %ld of %ld zero-copy sends copied by the kernel\n",
           size, depth, uring_zc ? " (SEND_ZC)" : "", bytes / elapsed / 1e6, (cpu_seconds() - cpu) / (bytes / 1e9), copied,
           notified);
#else
    fprintf(stderr, "tcp_probe: built without liburing (liburing-dev)\n");
    return 2;
#endif
  } else if (rr) {
    long n = (long)amount;
    for (long i = 0; i < n; ++i)
      if (full(s, buf, size, 1) != 0 || full(s, buf, size, 0) != 0) return 1;
    printf("rr %u B: %.2f us per round trip\n", size, (now() - start) * 1e6 / (double)n);
  } else if (zc) {
    /* The buffer is rewritten by nobody, so a send may reuse it before its
     * completion; completions are drained only to keep the socket's option
     * memory from running out (ENOBUFS). */
    double bytes = 0;
    long sent = 0, completed = 0, copied = 0;
    while (now() - start < amount) {
      ssize_t r = send(s, buf, size, MSG_ZEROCOPY);
      if (r < 0 && errno == ENOBUFS) {
        completed += zerocopy_completions(s, &copied);
        continue;
      }
      if (r <= 0) return 1;
      bytes += (double)r;
      ++sent;
      if ((sent & 15) == 0) completed += zerocopy_completions(s, &copied);
    }
    double elapsed = now() - start;
    for (int i = 0; i < 1000 && completed < sent; ++i) {
      completed += zerocopy_completions(s, &copied);
      if (completed < sent) usleep(1000);
    }
    printf("stream-zc %u B sends: %.1f MB/s, %.2f s CPU per GB, %ld of %ld completed sends copied by the kernel\n",
           size, bytes / elapsed / 1e6, (cpu_seconds() - cpu) / (bytes / 1e9), copied, completed);
  } else {
    double bytes = 0;
    while (now() - start < amount) {
      if (full(s, buf, size, 1) != 0) return 1;
      bytes += size;
    }
    printf("stream %u B writes: %.1f MB/s, %.2f s CPU per GB\n", size, bytes / (now() - start) / 1e6,
           (cpu_seconds() - cpu) / (bytes / 1e9));
  }
  close(s);
  return 0;
}
