// A run's report.html in a real browser: headless Chromium opens the file as a user would
// (file://, no server, no network), and every plot decodes and every table holds report.json's
// numbers. Label "browser"; skipped, saying why, only where no Chromium is installed or it
// cannot start.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>
#include <string>

#include "browser/cdp.h"
#include "mmintent/run/run_directory.h"
#include "support/fixture.h"
#include "support/support.h"

namespace mmintent {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::string fixed4(double v) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(4) << v;
  return os.str();
}

TEST(RunReportTest, OpensOfflineInChromiumWithEveryPlotAndTable) {
  const auto exe = test::Chromium::find();
  if (exe.empty()) GTEST_SKIP() << "no Chromium installed (apt-get install chromium, or set MMINTENT_CHROMIUM)";
  test::TempDir dir;
  const auto run_dir = (dir.path() / "run").string();
  test::train_quietly(test::write_fixture(dir.path(), run_dir), {"train.epochs=2", "train.log_every_steps=2"});
  const RunDirectory run(run_dir);
  ASSERT_TRUE(fs::is_regular_file(run.html_report()));
  ASSERT_TRUE(fs::is_regular_file(run.learning_curve_plot()));
  std::ifstream in(run.report_file());
  const auto report = json::parse(in);
  int pngs = 0;
  for (const auto& entry : fs::directory_iterator(run.path())) pngs += entry.path().extension() == ".png";

  std::unique_ptr<test::Chromium> browser;
  try {
    browser = std::make_unique<test::Chromium>(exe, dir.path());
  } catch (const std::exception& e) {
    GTEST_SKIP() << "Chromium cannot start here: " << e.what();
  }
  test::Cdp page(browser->port(), browser->page_path());
  page.call("Runtime.enable");
  page.call("Page.enable");
  page.call("Page.navigate", {{"url", "file://" + fs::absolute(run.html_report()).string()}});
  ASSERT_TRUE(page.wait_for("document.readyState === 'complete' && "
                            "Array.from(document.images).every(i => i.complete)"));

  // Every plot of the run is in the page, and decodes.
  const auto images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth > 0])");
  EXPECT_EQ(static_cast<int>(images.size()), pngs) << images.dump();
  for (const auto& image : images) EXPECT_TRUE(image[1].get<bool>()) << image[0] << " did not decode";
  // Nothing was fetched: the page is one file (images inline, no script, no style sheet).
  EXPECT_EQ(page.evaluate("performance.getEntriesByType('resource').length").get<int>(), 0);
  EXPECT_EQ(page.evaluate("document.scripts.length").get<int>(), 0);

  // The tables hold report.json's numbers, per split.
  for (const char* split : {"val", "test"}) {
    ASSERT_TRUE(report.contains(split)) << report.dump();
    const std::string section = std::string("#split-") + split;
    const auto metrics = page.evaluate("document.querySelector('" + section + " table.kv').innerText").get<std::string>();
    EXPECT_NE(metrics.find("accuracy\t" + fixed4(report[split]["accuracy"].get<double>())), std::string::npos)
        << split << ":\n" << metrics;
    const auto rows = page.evaluate("document.querySelectorAll('" + section + " table.classes tr').length").get<int>();
    EXPECT_EQ(rows, static_cast<int>(report[split]["per_class"].size()) + 1) << split;  // + the header
  }
  EXPECT_EQ(page.evaluate("document.querySelector('#training img').alt").get<std::string>(), "learning curve");
  EXPECT_TRUE(page.page_errors().empty()) << page.page_errors().front();
}

}  // namespace
}  // namespace mmintent
