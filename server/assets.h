/* Files built into the binary (generated from server/page.html and
 * openapi/openapi.yaml by server/embed.cmake), so vapo-serve runs from any folder. */
#ifndef SERVE_ASSETS_H
#define SERVE_ASSETS_H

#include <stddef.h>

extern const unsigned char asset_page_html[];
extern const size_t asset_page_html_len;
extern const unsigned char asset_openapi_yaml[];
extern const size_t asset_openapi_yaml_len;

#endif
