/* Opens the first verbs device, allocates N protection domains, prints
 * "ready", then waits to be killed. A plain verbs program, used to check that
 * the router cleans up after clients that die without closing anything. */
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1;
  struct ibv_device** list = ibv_get_device_list(NULL);
  if (list == NULL || list[0] == NULL) {
    perror("ibv_get_device_list");
    return 1;
  }
  struct ibv_context* ctx = ibv_open_device(list[0]);
  if (ctx == NULL) {
    perror("ibv_open_device");
    return 1;
  }
  for (int i = 0; i < n; ++i) {
    if (ibv_alloc_pd(ctx) == NULL) {
      perror("ibv_alloc_pd");
      return 1;
    }
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}
