# The GPU session's build, sourced by tests/gpu/gpu-session.sh (on the device) and scripts/gpu-prebuild.sh (here,
# to carry along): only the targets the session runs, for the GPU's own architecture (ARCH, default 90a-real:
# H100/H200), with the ptxas register/spill report; $ORIGIN run paths, so the binaries run wherever the folder lands.
# shellcheck shell=bash
gpu_targets=(flashsig flashsig-bench cuda-masks-bench test_cuda_forward test_cuda_backward test_cuda_masks
  test_cuda_linear test_cuda_memory)
gpu_arch=${ARCH:-90a-real}
gpu_configure_args=(-DCMAKE_BUILD_TYPE=Release -DFSIG_CUDA_RESOURCE_USAGE=ON -DFSIG_CUDA_ARCHITECTURES="$gpu_arch"
  -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON)
