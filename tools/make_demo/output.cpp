// Writing the data set: PNGs, the JSONL manifests, files replaced atomically.

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <system_error>

#include "demo.h"

namespace mmintent::make_demo {
namespace {

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
          out += buffer;
        } else {
          out += ch;  // UTF-8 passes through unchanged
        }
    }
  }
  return out + "\"";
}

bool is_generated_png_name(const std::string& name) {
  if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".png") != 0) return false;
  return std::all_of(name.begin(), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; });
}

/// Removes PNGs an earlier run left in `dir` (only names made of digits + ".png").
void remove_old_images(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec) && is_generated_png_name(entry.path().filename().string())) {
      fs::remove(entry.path(), ec);
      if (ec) throw ToolError(entry.path().string() + ": cannot remove: " + ec.message());
    }
  }
  if (ec) throw ToolError(dir.string() + ": cannot list: " + ec.message());
}

}  // namespace

void write_text_file_atomically(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw ToolError(tmp.string() + ": cannot create: " + std::strerror(errno));
    out << content;
    out.flush();
    if (!out) throw ToolError(tmp.string() + ": write failed: " + std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw ToolError("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
}

void write_split(const fs::path& out_dir, const char* name, const std::vector<Sample>& samples,
                 const Images& set) {
  const fs::path image_dir = out_dir / "images" / name;
  std::error_code ec;
  fs::create_directories(image_dir, ec);
  if (ec) throw ToolError(image_dir.string() + ": cannot create: " + ec.message());
  remove_old_images(image_dir);

  std::size_t width = 5;
  while (samples.size() > 1 && std::to_string(samples.size() - 1).size() > width) ++width;
  std::string manifest;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    std::ostringstream file_name;
    file_name << std::setw(static_cast<int>(width)) << std::setfill('0') << i << ".png";
    const fs::path png = image_dir / file_name.str();
    const cv::Mat image(kImageSide, kImageSide, CV_8UC1,
                        const_cast<std::uint8_t*>(set.pixels.data() +
                                                  samples[i].image * kImageSide * kImageSide));
    bool ok = false;
    try {
      ok = cv::imwrite(png.string(), image);
    } catch (const cv::Exception& e) {
      throw ToolError(png.string() + ": cannot write PNG: " + e.what());
    }
    if (!ok) throw ToolError(png.string() + ": cannot write PNG");
    manifest += "{\"text\": " + json_string(samples[i].text) + ", \"image\": " +
                json_string(std::string("images/") + name + "/" + file_name.str()) +
                ", \"label\": " + json_string(intent_name(samples[i].intent)) + "}\n";
  }
  write_text_file_atomically(out_dir / (std::string(name) + ".jsonl"), manifest);
}

}  // namespace mmintent::make_demo
