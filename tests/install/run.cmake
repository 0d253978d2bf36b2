# CTest install_consumer: installs the build into a fresh prefix, then builds and runs the C example
# against the installed package twice — by find_package(FlashSig) in a project of its own, and by
# pkg-config and the C compiler where pkg-config exists — so that a missing file, a path into the
# build or source tree, or a broken .pc shows.
#   cmake -DBUILD_DIR=<build> -DSOURCE_DIR=<source> -DWORK_DIR=<scratch> -P tests/install/run.cmake
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    list(JOIN ARGV " " cmd)
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f include/flashsig.h bin/flashsig-bench)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()

# find_package
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install -B ${WORK_DIR}/consumer -DCMAKE_PREFIX_PATH=${prefix}
    -DEXAMPLE_C=${SOURCE_DIR}/examples/c/example.c)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/flashsig-consumer)
message(STATUS "find_package consumer ran:\n${last_output}")
# the installed benchmark finds the installed library
run(${prefix}/bin/flashsig-bench --seq 64 --d 64 --heads 2 --iters 1 --warmup 0)

# pkg-config, with nothing but the installed files
find_program(PKG_CONFIG pkg-config)
find_program(CC NAMES cc gcc)
if(PKG_CONFIG AND CC)
  file(GLOB_RECURSE pc ${prefix}/*/flashsig.pc)
  get_filename_component(pc_dir "${pc}" DIRECTORY)
  set(ENV{PKG_CONFIG_PATH} ${pc_dir})
  run(${PKG_CONFIG} --cflags --libs flashsig)
  string(STRIP "${last_output}" flags)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run(${CC} ${SOURCE_DIR}/examples/c/example.c ${flags} -lm -o ${WORK_DIR}/pkgconfig-consumer)
  file(GLOB libdir LIST_DIRECTORIES true ${prefix}/lib*)
  set(ENV{LD_LIBRARY_PATH} "${libdir}")
  run(${WORK_DIR}/pkgconfig-consumer)
  message(STATUS "pkg-config consumer ran")
else()
  message(STATUS "pkg-config or cc not found: the pkg-config consumer is not built")
endif()
