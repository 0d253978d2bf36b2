# Included by the top-level CMakeLists.txt (FSIG_HAVE_CUDA, no sanitizers). libfsig_cuda_emu: the emulated
# CUDA runtime and the kernels' execution (cuda_emu.cpp). libflashsig_emu: libflashsig's objects with every
# CUDA unit compiled by g++ as C++ (cuda_emu.h force-included, FSIG_CUDA_EMULATION), linked against the
# emulator instead of cudart. The GPU tests' *_emu executables (tests/gpu) link these two.
add_library(fsig_cuda_emu SHARED ${CMAKE_CURRENT_SOURCE_DIR}/tests/emu/cuda_emu.cpp)
target_include_directories(fsig_cuda_emu PUBLIC ${CUDAToolkit_INCLUDE_DIRS} ${CMAKE_CURRENT_SOURCE_DIR}/tests/emu)
target_compile_definitions(fsig_cuda_emu PUBLIC FSIG_CUDA_EMULATION=1)
target_compile_options(fsig_cuda_emu PRIVATE ${FSIG_BASELINE_FLAGS} ${FSIG_WARNINGS} -O2)
set_target_properties(fsig_cuda_emu PROPERTIES CXX_VISIBILITY_PRESET default VISIBILITY_INLINES_HIDDEN OFF
                      LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})

set(FSIG_EMU_UNITS)
foreach(FSIG_SRC ${FSIG_CUDA_SOURCES})
  get_filename_component(FSIG_ABS ${FSIG_SRC} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  get_filename_component(FSIG_NAME ${FSIG_SRC} NAME_WE)
  set(FSIG_UNIT_CPP ${CMAKE_BINARY_DIR}/cuda_emu_units/${FSIG_NAME}.cpp)
  file(CONFIGURE OUTPUT ${FSIG_UNIT_CPP} CONTENT "#include \"${FSIG_ABS}\"\n" @ONLY)
  list(APPEND FSIG_EMU_UNITS ${FSIG_UNIT_CPP})
endforeach()
add_library(flashsig_emu SHARED $<TARGET_OBJECTS:fsig_cpu> ${FSIG_EMU_UNITS})
target_include_directories(flashsig_emu PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
                           PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda)
# -O1: the kernels' unrolled loops take g++ minutes at -O2 and run little faster (fibers switch at every
# warp collective anyway); -Wno-attributes: __device__ and __global__ are attributes g++ does not know
target_compile_options(flashsig_emu PRIVATE -include cuda_emu.h ${FSIG_BASELINE_FLAGS} -O1 -Wall -Wno-attributes -Wno-class-memaccess
                       -Wno-unused-parameter -Wno-unknown-pragmas)
# the emulator runs the Hopper (wgmma) kernels too, when it emulates an sm_90 device (FSIG_EMU_SM=90)
target_compile_definitions(flashsig_emu PRIVATE FSIG_CUDA_SM90A=1)
target_link_libraries(flashsig_emu PUBLIC fsig_cuda_emu PRIVATE pthread)
target_link_options(flashsig_emu PRIVATE -Wl,--no-undefined -Wl,--version-script=${CMAKE_CURRENT_SOURCE_DIR}/native/exports.map)
set_target_properties(flashsig_emu PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
