# SPDX-License-Identifier: MIT
# Turns doxygen's man pages (GENERATE_MAN, MAN_LINKS) into pages fit to
# install next to the system's:
# - a page whose name does not start with tether_ or TETHER_ is dropped if it
#   is a one-line link (struct fields such as `size`, `len`, `name`: they
#   would shadow unrelated pages, `man 3 size`), or a file page (conn.h);
# - the group pages (conn, loop, log, ...; `log` would shadow libm's log(3))
#   become tether-conn, tether-loop, ..., and the links to them follow;
# so `man tether_conn_send` opens the page of its group, `man tether-conn`
# the group, and `man tether_conn_opts` the struct.
#
#   cmake -DMAN_DIR=<dir with the *.3 files> -P fix-man-pages.cmake
cmake_minimum_required(VERSION 3.20)
if(NOT MAN_DIR OR NOT IS_DIRECTORY "${MAN_DIR}")
    message(FATAL_ERROR "fix-man-pages: MAN_DIR '${MAN_DIR}' is not a directory")
endif()
file(GLOB pages RELATIVE "${MAN_DIR}" "${MAN_DIR}/*.3")
set(groups "")
foreach(page IN LISTS pages)
    string(REGEX REPLACE "\\.3$" "" name "${page}")
    if(name MATCHES "^(tether|TETHER)_")
        continue()
    endif()
    file(READ "${MAN_DIR}/${page}" text)
    if(text MATCHES "^\\.so " OR name MATCHES "\\.h$")
        file(REMOVE "${MAN_DIR}/${page}")
    else()
        list(APPEND groups "${name}")
    endif()
endforeach()
foreach(group IN LISTS groups)
    file(READ "${MAN_DIR}/${group}.3" text)
    string(REGEX REPLACE "^\\.TH \"${group}\"" ".TH \"tether-${group}\"" text "${text}")
    string(REPLACE "\n${group} \\- " "\ntether-${group} \\- " text "${text}")
    file(WRITE "${MAN_DIR}/tether-${group}.3" "${text}")
    file(REMOVE "${MAN_DIR}/${group}.3")
endforeach()
# The links that pointed at a group page.
file(GLOB links "${MAN_DIR}/*.3")
foreach(link IN LISTS links)
    file(READ "${link}" text)
    if(text MATCHES "^\\.so man3/([^\n]+)\\.3")
        set(target "${CMAKE_MATCH_1}")
        if(target IN_LIST groups)
            file(WRITE "${link}" ".so man3/tether-${target}.3\n")
        elseif(NOT EXISTS "${MAN_DIR}/${target}.3")
            file(REMOVE "${link}") # a link to a page that was dropped
        endif()
    endif()
endforeach()
