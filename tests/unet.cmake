# The U-Net energy through the real programs: vapo-train -> vapo-sample -> vapo-serve (tiny-unet, seconds).
if(TARGET vapo-serve AND TARGET vapo-sample AND EXISTS /usr/bin/python3)
  add_test(NAME unet_end_to_end
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/unet_end_to_end.py $<TARGET_FILE:vapo-train>
                   $<TARGET_FILE:vapo-sample> $<TARGET_FILE:vapo-serve>
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(unet_end_to_end PROPERTIES TIMEOUT 300 ENVIRONMENT "OMP_WAIT_POLICY=passive")
endif()
