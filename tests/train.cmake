# End-to-end training on 2-D points; needs the trainer's optimiser.
add_executable(train2d ${CMAKE_CURRENT_SOURCE_DIR}/train2d.c ${CMAKE_SOURCE_DIR}/train/trainer/optim.c)
target_include_directories(train2d PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/train)
target_link_libraries(train2d PRIVATE vapo)
add_test(NAME train2d COMMAND train2d WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
