# RK45 against SciPy: test_ode writes its RK45 results to the build folder,
# ode_scipy_ref.py re-solves them with solve_ivp and compares states and NFE.
# Debian's /usr/bin/python3 on purpose (python3-scipy from scripts/setup.sh),
# not whatever python3 comes first on PATH.
add_test(NAME ode_scipy_ref
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/ode_scipy_ref.py
                 ${CMAKE_BINARY_DIR}/ode_rk45_results.txt
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
# The fixture makes `ctest -R ode_scipy_ref` run test_ode first, and orders them under -j.
set_tests_properties(test_ode PROPERTIES FIXTURES_SETUP ode_rk45_results)
set_tests_properties(ode_scipy_ref PROPERTIES FIXTURES_REQUIRED ode_rk45_results)
