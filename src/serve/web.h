#pragma once
/// The web page at `/` of `mmintent serve` (src/serve/web/*, embedded at build time by
/// cmake/EmbedFiles.cmake). Internal.

#include <string_view>

namespace mmintent::serve::web {

extern const std::string_view kIndexHtml;  ///< web/index.html
extern const std::string_view kAppJs;      ///< web/app.js

}  // namespace mmintent::serve::web
