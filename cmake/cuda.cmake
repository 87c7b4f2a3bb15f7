# Optional CUDA backend: built whenever nvcc, cuBLAS and cuDNN are present.
#
# cuDNN and cuBLAS are looked for, in order, under CUDNN_ROOT / CUBLAS_ROOT
# (CMake or environment variables), in the toolkit's folders, and in the
# NVIDIA pip wheels of the python3 on the PATH (site-packages/nvidia/cudnn,
# nvidia/cublas: what PyTorch installs; they ship only versioned names,
# libcudnn.so.9 and libcublas.so.13, with the headers beside them). The
# programs then need those folders at run time: bench/gpu_check.sh puts them
# on LD_LIBRARY_PATH. The CUDA runtime is linked statically (cudart_static),
# so nothing else of the toolkit is needed where the programs run.
set(VAPO_HAVE_CUDA OFF)

# The folder of the pip wheel `nvidia.NAME` (e.g. cudnn, cublas), or "".
function(vapo_cuda_wheel_dir name out)
  set(dir "")
  find_program(VAPO_PYTHON3 python3)
  if(VAPO_PYTHON3)
    execute_process(COMMAND ${VAPO_PYTHON3} -c
                    "import nvidia.${name} as m; print(list(m.__path__)[0])"
                    OUTPUT_VARIABLE dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      set(dir "")
    endif()
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

if(VAPO_CUDA AND NOT VAPO_SANITIZE)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    find_package(CUDAToolkit QUIET)
    vapo_cuda_wheel_dir(cudnn VAPO_CUDNN_WHEEL)
    vapo_cuda_wheel_dir(cublas VAPO_CUBLAS_WHEEL)
    find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 NAMES_PER_DIR
                 HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_DIR} ${VAPO_CUDNN_WHEEL}
                 PATH_SUFFIXES lib lib64)
    find_path(CUDNN_INCLUDE_DIR cudnn.h
              HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_INCLUDE_DIRS} ${VAPO_CUDNN_WHEEL}
              PATH_SUFFIXES include)
    if(TARGET CUDA::cublas)
      set(VAPO_CUBLAS_LIBRARY CUDA::cublas)
    else()
      find_library(VAPO_CUBLAS_LIBRARY NAMES cublas libcublas.so.13 libcublas.so.12 NAMES_PER_DIR
                   HINTS ${CUBLAS_ROOT} $ENV{CUBLAS_ROOT} ${VAPO_CUBLAS_WHEEL} PATH_SUFFIXES lib lib64)
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cudart_static AND VAPO_CUBLAS_LIBRARY
     AND CUDNN_LIBRARY AND CUDNN_INCLUDE_DIR AND EXISTS ${CMAKE_SOURCE_DIR}/kernels/CMakeLists.txt)
    set(VAPO_HAVE_CUDA ON)
  endif()
endif()
if(VAPO_HAVE_CUDA)
  message(STATUS "vapo: ✓ CUDA ${CUDAToolkit_VERSION} (static runtime), cuBLAS ${VAPO_CUBLAS_LIBRARY}, "
                 "cuDNN ${CUDNN_LIBRARY} (headers ${CUDNN_INCLUDE_DIR})")
  add_subdirectory(kernels)
elseif(VAPO_CUDA AND NOT VAPO_SANITIZE)
  message(STATUS "vapo: ✗ CUDA backend not built: nvcc ${CMAKE_CUDA_COMPILER}, toolkit ${CUDAToolkit_FOUND}, "
                 "cuBLAS ${VAPO_CUBLAS_LIBRARY}, cuDNN ${CUDNN_LIBRARY} / ${CUDNN_INCLUDE_DIR} "
                 "(set CUDNN_ROOT, or install the nvidia-cudnn pip wheel)")
else()
  message(STATUS "vapo: ✗ CUDA backend not built (VAPO_CUDA=OFF, or sanitizers on)")
endif()
