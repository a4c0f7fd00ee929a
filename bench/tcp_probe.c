/* The TCP baselines the multi-host numbers are compared with, between the
 * same two namespaces as the verbs programs:
 *   tcp_probe server PORT                    serves both modes below
 *   tcp_probe stream HOST PORT BYTES SECONDS one-way stream in BYTES writes: MB/s
 *   tcp_probe rr HOST PORT BYTES ITERATIONS  request/response ping-pong: us per round trip
 * TCP_NODELAY on both ends (as the routers' links). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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
    fprintf(stderr, "usage: tcp_probe server PORT | stream HOST PORT BYTES SECONDS | rr HOST PORT BYTES ITERATIONS\n");
    return 2;
  }
  int rr = strcmp(argv[1], "rr") == 0;
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
  unsigned hdr[2] = {(unsigned)rr, size};
  full(s, (char*)hdr, sizeof hdr, 1);
  char* buf = calloc(1, size);
  double start = now();
  if (rr) {
    long n = (long)amount;
    for (long i = 0; i < n; ++i)
      if (full(s, buf, size, 1) != 0 || full(s, buf, size, 0) != 0) return 1;
    printf("rr %u B: %.2f us per round trip\n", size, (now() - start) * 1e6 / (double)n);
  } else {
    double bytes = 0;
    while (now() - start < amount) {
      if (full(s, buf, size, 1) != 0) return 1;
      bytes += size;
    }
    printf("stream %u B writes: %.1f MB/s\n", size, bytes / (now() - start) / 1e6);
  }
  close(s);
  return 0;
}
