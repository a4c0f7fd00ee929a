/* An MPI job that checks its data, for two ranks or more: ping-pong between
 * ranks 0 and 1 of every power-of-two size from 1 B to 4 MiB (each byte
 * checked on both sides), MPI_Allreduce (sum and max) and MPI_Alltoall of
 * rank-dependent values, and one-sided MPI_Put and MPI_Get in a window with
 * fences. Prints "mpi check: ... ok" on rank 0 and exits 0 when all holds;
 * aborts the job on the first wrong byte. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIZE (4 << 20)

static int rank, size;

static void check(int ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "rank %d: %s is wrong\n", rank, what);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
}

static uint8_t pattern(size_t i, int round) { return (uint8_t)(i * 131 + (size_t)round * 7 + 1); }

static void ping_pong(void) {
  uint8_t* buf = malloc(MAX_SIZE);
  check(buf != NULL, "malloc");
  int round = 0;
  for (size_t n = 1; n <= MAX_SIZE; n *= 2, round++) {
    if (rank == 0) {
      for (size_t i = 0; i < n; i++) buf[i] = pattern(i, round);
      MPI_Send(buf, (int)n, MPI_BYTE, 1, round, MPI_COMM_WORLD);
      memset(buf, 0, n);
      MPI_Recv(buf, (int)n, MPI_BYTE, 1, round, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      for (size_t i = 0; i < n; i++) check(buf[i] == (uint8_t)~pattern(i, round), "the ping-pong reply");
    } else if (rank == 1) {
      MPI_Recv(buf, (int)n, MPI_BYTE, 0, round, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      for (size_t i = 0; i < n; i++) {
        check(buf[i] == pattern(i, round), "the ping-pong message");
        buf[i] = (uint8_t)~buf[i];
      }
      MPI_Send(buf, (int)n, MPI_BYTE, 0, round, MPI_COMM_WORLD);
    }
  }
  free(buf);
}

static void collectives(void) {
  enum { N = 4096 };
  static long in[N], out[N];
  for (int i = 0; i < N; i++) in[i] = (long)rank * N + i;
  MPI_Allreduce(in, out, N, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  for (int i = 0; i < N; i++)
    check(out[i] == (long)N * size * (size - 1) / 2 + (long)i * size, "MPI_Allreduce (sum)");
  MPI_Allreduce(in, out, N, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
  for (int i = 0; i < N; i++) check(out[i] == (long)(size - 1) * N + i, "MPI_Allreduce (max)");

  enum { PER = 1024 };
  int* send = malloc(sizeof(int) * PER * (size_t)size);
  int* recv = malloc(sizeof(int) * PER * (size_t)size);
  for (int to = 0; to < size; to++)
    for (int k = 0; k < PER; k++) send[to * PER + k] = rank * 1000000 + to * 1000 + k;
  MPI_Alltoall(send, PER, MPI_INT, recv, PER, MPI_INT, MPI_COMM_WORLD);
  for (int from = 0; from < size; from++)
    for (int k = 0; k < PER; k++) check(recv[from * PER + k] == from * 1000000 + rank * 1000 + k, "MPI_Alltoall");
  free(send);
  free(recv);
}

static void one_sided(void) {
  enum { N = 65536 };
  int* base;
  MPI_Win win;
  MPI_Win_allocate(N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win);
  for (int i = 0; i < N; i++) base[i] = -1;
  int* mine = malloc(N * sizeof(int));
  for (int i = 0; i < N; i++) mine[i] = rank * N + i;
  int right = (rank + 1) % size, left = (rank + size - 1) % size;
  MPI_Win_fence(0, win);
  MPI_Put(mine, N, MPI_INT, right, 0, N, MPI_INT, win);
  MPI_Win_fence(0, win);
  for (int i = 0; i < N; i++) check(base[i] == left * N + i, "the window after MPI_Put");
  int* got = malloc(N * sizeof(int));
  MPI_Get(got, N, MPI_INT, right, 0, N, MPI_INT, win);
  MPI_Win_fence(0, win);
  for (int i = 0; i < N; i++) check(got[i] == rank * N + i, "MPI_Get");
  MPI_Win_free(&win);
  free(mine);
  free(got);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  check(size >= 2, "the number of ranks (at least 2)");
  char host[MPI_MAX_PROCESSOR_NAME];
  int len;
  MPI_Get_processor_name(host, &len);
  printf("rank %d of %d on %s\n", rank, size, host);
  ping_pong();
  collectives();
  one_sided();
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) printf("mpi check: ping-pong 1 B..4 MiB, allreduce, alltoall, put/get: ok\n");
  MPI_Finalize();
  return 0;
}
