#!/usr/bin/env bash
# Regenerates io.flashsig.ffi from include/flashsig.h with the jextract on PATH, then records the
# header's hash so that HeaderBindingsTest fails whenever the header changes without this script.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/java-bindings/src/main/java"
command -v jextract >/dev/null || { echo "jextract is not on PATH (see README, 'Regenerating the bindings')" >&2; exit 1; }
rm -rf "$out/io/flashsig/ffi"
symbols=(fsig_attention_params_default fsig_attention_params_init fsig_attention_forward
  fsig_attention_backward fsig_attention_forward_buffers fsig_attention_backward_buffers
  fsig_version fsig_version_string fsig_get_capabilities fsig_set_num_threads fsig_get_num_threads
  fsig_release_cached_memory
  fsig_status_string fsig_last_error
  fsig_attention_forward_ex fsig_attention_backward_ex fsig_attention_forward_ex_buffers
  fsig_attention_backward_ex_buffers fsig_alibi_slopes
  fsig_cuda_malloc fsig_cuda_free fsig_cuda_memcpy fsig_cuda_stream_create fsig_cuda_stream_destroy
  fsig_cuda_synchronize fsig_cuda_get_device_info fsig_attention_backward_workspace_size
  fsig_attention_backward_workspace_size_ex)
args=(--target-package io.flashsig.ffi --header-class-name FlashSigNative --output "$out")
for f in "${symbols[@]}"; do args+=(--include-function "$f"); done
for s in fsig_tensor fsig_attention_params fsig_capabilities fsig_cuda_device_info; do args+=(--include-struct "$s"); done
for t in fsig_tensor fsig_attention_params fsig_capabilities fsig_cuda_device_info; do args+=(--include-typedef "$t"); done
# enum constants and the FSIG_* macros that callers need
consts=$(grep -oE '\bFSIG_[A-Z0-9_]+ *(=|$)|#define FSIG_[A-Z0-9_]+ [0-9]' "$root/include/flashsig.h" \
  | grep -oE 'FSIG_[A-Z0-9_]+' | grep -v -E '^FSIG_API$' | sort -u)
for c in $consts; do args+=(--include-constant "$c"); done
jextract "${args[@]}" "$root/include/flashsig.h"
sha256sum "$root/include/flashsig.h" | cut -d' ' -f1 > "$root/java-bindings/src/main/resources/io/flashsig/flashsig.h.sha256"
echo "regenerated $(find "$out/io/flashsig/ffi" -name '*.java' | wc -l) files into $out/io/flashsig/ffi"
