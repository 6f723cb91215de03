#!/usr/bin/env bash
# The image's full multi-stage build with podman: deploy/docker/Dockerfile's `build` stage compiles
# the aldea binary (CTranslate2 and oneDNN included: about an hour on 2 cores, so not part of
# scripts/test.sh, whose image check builds only the runtime stage around the tested binary), then
# scripts/check-image.sh checks the result. No image comes from a registry here: the Debian base is
# made with debootstrap, and the builder image (`rust:<version>-bookworm`, as the Dockerfile names it)
# is that base with this machine's Rust toolchain (and the certificate authorities it adds) imported.
# Crates come from the registry cargo is configured for (--network=host).
# Usage: scripts/build-image.sh [TAG] (default localhost/aldea:full).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ALDEA_REPO"
tag="${1:-localhost/aldea:full}"
aldea_podman_setup
sysroot="$(rustc --print sysroot)"
version="$(rustc --version | awk '{print $2}')"
builder="localhost/rust:${version%.*}-bookworm"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
if ! "${P[@]}" image exists "$builder"; then
  aldea_log "making the builder image $builder from $sysroot"
  mkdir -p "$context/rust"
  # The compiler, cargo and the standard library; not the documentation.
  cp -a "$sysroot/bin" "$sysroot/lib" "$context/rust/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$context/rust/"
  # The certificate authorities this machine adds to Debian's (a proxy's, say): cargo in the builder
  # reaches the registry as cargo here does. Only the builder has them, not the runtime image.
  mkdir -p "$context/ca"
  find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$context/ca/" \; 2>/dev/null || true
  cat > "$context/Containerfile" <<'CONTAINERFILE'
FROM localhost/debian:bookworm-slim
COPY rust /usr/local/rust
COPY ca /usr/local/share/ca-certificates
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && update-ca-certificates \
    && cargo --version && rustc --version
CONTAINERFILE
  "${P[@]}" build --isolation=chroot --pull=never --network=host --format docker -t "$builder" "$context"
  rm -rf "${context:?}"/*
fi
# The build context: the committed tree only (no local build outputs or secrets).
git archive HEAD | tar -x -C "$context"
aldea_log "building $tag from $(git rev-parse --short HEAD) with $builder (the binary is compiled inside)"
started=$(date +%s)
"${P[@]}" build --isolation=chroot --pull=never --network=host --format docker \
  --build-arg BUILDER_IMAGE="$builder" \
  -f deploy/docker/Dockerfile -t "$tag" "$context"
aldea_log "built $tag in $(( $(date +%s) - started )) s ($("${P[@]}" image inspect --format '{{.Size}}' "$tag") bytes)"
ALDEA_CHECK_IMAGE="$tag" bash "$ALDEA_REPO/scripts/check-image.sh"
