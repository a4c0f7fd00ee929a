# The app base image: Debian 12 with the usual RDMA user tools (ibverbs-utils,
# perftest, rdmacm-utils, ucx-utils) and libffverbs.so. Given a tenant's CDI
# device (podman run --device ffrouter.io/tenant=blue), its programs reach
# that tenant's router: the spec mounts the socket and the host's shim over
# this one, and preloads it.
ARG BASE=localhost/ffrouter-base:bookworm
FROM ${BASE}
COPY lib/libffverbs.so /usr/lib/ffrouter/libffverbs.so
CMD ["ibv_devinfo"]
