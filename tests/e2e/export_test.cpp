// mmintent export: a trained run's weights as safetensors, read back here byte by byte against
// the run's own model.pt, and by an independent reader (Python, no mmintent code) where
// Debian's python3-torch is installed; ONNX and TorchScript exports of several architectures
// run (ONNX Runtime for Node.js, TorchScript in PyTorch) on the inputs mmintent's model gets,
// their logits within 1e-4 of mmintent's.
#include "mmintent/config/loader.h"
#include "mmintent/core/batch.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/run/setup.h"
#include "mmintent/training/checkpoint.h"
#include "support/audio.h"
#include "support/cli.h"
#include "support/fixture.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace mmintent {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class ExportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    run_dir_ = (dir_->path() / "run").string();
    test::train_quietly(test::write_fixture(dir_->path(), run_dir_), {"train.epochs=1"});
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  test::CliResult cli(const std::vector<std::string>& args) const {
    return test::run_cli(MMINTENT_CLI, args, dir_->path(), {}, dir_->path() / "cli_logs");
  }
  /// The run's parameters and buffers as mmintent loads them from model.pt.
  static StateDict run_state() {
    const RunDirectory run(run_dir_);
    const Config config = run.load_config();
    const RunData data = load_run_data(run, config);
    return copy_state(*load_run_model(run, config, data, c10::Device(c10::kCPU)), true);
  }
  static test::TempDir* dir_;
  static std::string run_dir_;
};
test::TempDir* ExportTest::dir_ = nullptr;
std::string ExportTest::run_dir_;

TEST_F(ExportTest, SafetensorsHoldsEveryTensorOfTheRunByteForByte) {
  const auto out = (dir_->path() / "model.safetensors").string();
  const auto r = cli({"export", run_dir_, "--format", "safetensors", "--out", out});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.out.find("wrote " + out), std::string::npos) << r.dump();

  const std::string bytes = test::read_file(out);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  ASSERT_LE(8 + header_length, bytes.size());
  EXPECT_EQ((8 + header_length) % 8, 0u) << "the header is padded to 8 bytes";
  const auto header = json::parse(bytes.substr(8, header_length));
  const std::string data = bytes.substr(8 + header_length);

  // The metadata says what the file is: the run's labels in class order and its config.
  const auto& meta = header.at("__metadata__");
  EXPECT_EQ(json::parse(meta.at("labels").get<std::string>()),
            json::parse(test::read_file((fs::path(run_dir_) / "labels.json").string())));
  EXPECT_NE(meta.at("config").get<std::string>().find("text_encoder:"), std::string::npos);

  const auto state = run_state();
  ASSERT_EQ(header.size(), state.size() + 1);  // + __metadata__
  uint64_t end = 0;
  for (const auto& [name, tensor] : state) {
    ASSERT_TRUE(header.contains(name)) << name;
    const auto& entry = header[name];
    EXPECT_EQ(entry.at("shape").get<std::vector<int64_t>>(), tensor.sizes().vec()) << name;
    EXPECT_EQ(entry.at("dtype"), tensor.scalar_type() == at::kFloat ? "F32" : "I64") << name;
    const auto begin = entry.at("data_offsets")[0].get<uint64_t>();
    const auto stop = entry.at("data_offsets")[1].get<uint64_t>();
    EXPECT_EQ(begin, end) << name << ": tensors are packed in order";
    end = stop;
    const auto t = tensor.contiguous();
    ASSERT_EQ(stop - begin, static_cast<uint64_t>(t.numel() * t.element_size())) << name;
    EXPECT_EQ(std::memcmp(data.data() + begin, t.data_ptr(), stop - begin), 0) << name;
  }
  EXPECT_EQ(end, data.size()) << "no bytes after the last tensor";

  // An independent reader: Python with numpy only (Debian's python3-torch brings it), no mmintent code.
  if (!fs::exists("/usr/bin/python3") ||
      test::run_cli("/usr/bin/python3", {"-c", "import numpy"}, dir_->path()).code != 0) {
    GTEST_SKIP() << "no /usr/bin/python3 with numpy: the independent reader is left out";
  }
  const std::string script =
      "import json, struct, sys, numpy as np\n"
      "b = open(sys.argv[1], 'rb').read()\n"
      "n = struct.unpack('<Q', b[:8])[0]\n"
      "h = json.loads(b[8:8 + n])\n"
      "types = {'F32': np.float32, 'I64': np.int64}\n"
      "out = {}\n"
      "for k, v in h.items():\n"
      "    if k == '__metadata__': continue\n"
      "    s, e = v['data_offsets']\n"
      "    a = np.frombuffer(b[8 + n + s:8 + n + e], dtype=types[v['dtype']]).reshape(v['shape'])\n"
      "    out[k] = float(a.astype(np.float64).sum())\n"
      "print(json.dumps(out))\n";
  const auto py = test::run_cli("/usr/bin/python3", {"-c", script, out}, dir_->path());
  ASSERT_EQ(py.code, 0) << py.dump();
  const auto sums = json::parse(py.out);
  for (const auto& [name, tensor] : state) {
    const double expected = tensor.to(at::kDouble).sum().item<double>();
    EXPECT_NEAR(sums.at(name).get<double>(), expected, 1e-6 * (1 + std::abs(expected))) << name;
  }
}

TEST_F(ExportTest, ErrorsNameTheRunOrTheFormat) {
  const auto missing = (dir_->path() / "runs" / "nowhere").string();
  const auto r = cli({"export", missing});
  EXPECT_EQ(r.code, 5) << r.dump();
  EXPECT_EQ(r.error_line(), "mmintent: error: run directory '" + missing + "' does not exist") << r.dump();
  EXPECT_EQ(cli({"export", run_dir_, "--format", "pickle"}).code, 2);
  // The default file is next to model.pt.
  const auto d = cli({"export", run_dir_});
  ASSERT_EQ(d.code, 0) << d.dump();
  EXPECT_TRUE(fs::is_regular_file(fs::path(run_dir_) / "model.safetensors"));
}


/// The exported network against mmintent's own forward pass, per architecture: each case trains
/// one epoch of the fixture with its overrides, exports ONNX and TorchScript, runs both on the
/// same inputs (random tokens with lengths 0 to T, random pixels, missing modalities) at a
/// batch size and length the export never traced, and compares the logits.
struct ArchitectureCase {
  std::string name;
  std::vector<std::string> overrides;
  bool tones = false;  ///< train on support/audio.h's tone fixture (audio) instead
};

std::ostream& operator<<(std::ostream& os, const ArchitectureCase& c) { return os << c.name; }

class ExportNetworkTest : public ::testing::TestWithParam<ArchitectureCase> {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/bin/python3") ||
        test::run_cli("/usr/bin/python3", {"-c", "import torch"}, dir_.path()).code != 0) {
      GTEST_SKIP() << "no /usr/bin/python3 with torch (Debian's python3-torch): ONNX and TorchScript "
                      "export are not available";
    }
  }
  test::CliResult cli(const std::vector<std::string>& args) const {
    return test::run_cli(MMINTENT_CLI, args, dir_.path(), {}, dir_.path() / "cli_logs");
  }
  test::TempDir dir_;
};

/// {"order": [...], name: {dtype, shape, data}} for tools/export's runners.
json tensor_json(const at::Tensor& t) {
  const auto flat = t.contiguous().view({-1});
  json data = json::array();
  if (t.scalar_type() == at::kLong) {
    for (int64_t i = 0; i < flat.numel(); ++i) data.push_back(flat[i].item<int64_t>());
  } else {
    for (int64_t i = 0; i < flat.numel(); ++i) data.push_back(flat[i].item<float>());
  }
  return {{"dtype", t.scalar_type() == at::kLong ? "int64" : "float32"}, {"shape", t.sizes().vec()}, {"data", data}};
}

TEST_P(ExportNetworkTest, OnnxAndTorchScriptGiveMmintentsLogits) {
  const auto run_dir = (dir_.path() / "run").string();
  auto overrides = GetParam().overrides;
  overrides.push_back("train.epochs=1");
  test::train_quietly(GetParam().tones ? test::write_tone_fixture(dir_.path(), run_dir)
                                       : test::write_fixture(dir_.path(), run_dir),
                      overrides);

  // mmintent's model and logits on inputs no loader would refuse, at B=6, T=11.
  const RunDirectory run(run_dir);
  const Config config = run.load_config();
  const RunData data = load_run_data(run, config);
  auto model = load_run_model(run, config, data, c10::Device(c10::kCPU));
  model->eval();
  torch::manual_seed(3);
  const int64_t B = 6, T = 11;
  Batch batch;
  json inputs;
  inputs["order"] = json::array();
  auto add = [&](const std::string& name, const at::Tensor& t) {
    inputs[name] = tensor_json(t);
    inputs["order"].push_back(name);
  };
  for (const auto& modality : model->modalities()) {
    if (modality == "text") {
      const auto lengths = torch::tensor(std::vector<int64_t>{11, 4, 1, 0, 7, 2});
      auto ids = torch::randint(1, model->options.text().vocab_size(), {B, T}, torch::kLong);
      ids.masked_fill_(torch::arange(T).unsqueeze(0) >= lengths.unsqueeze(1), 0);
      const auto mask = (lengths > 0).to(torch::kFloat);
      batch.inputs["text"] = {ids, lengths, mask};
      add("text_ids", ids);
      add("text_lengths", lengths);
      add("text_mask", mask);
    } else if (modality == "audio") {
      const int64_t frames = 41, mels = model->options.audio().n_mels();
      const auto lengths = torch::tensor(std::vector<int64_t>{41, 13, 1, 0, 27, 5});
      auto features = torch::randn({B, frames, mels});
      features.masked_fill_((torch::arange(frames).unsqueeze(0) >= lengths.unsqueeze(1)).unsqueeze(2), 0.f);
      const auto mask = (lengths > 0).to(torch::kFloat);
      batch.inputs["audio"] = {features, lengths, mask};
      add("audio", features);
      add("audio_lengths", lengths);
      add("audio_mask", mask);
    } else {
      const auto& image = config.data.image;
      const auto pixels = torch::randn({B, model->options.image().in_channels(), image.height, image.width});
      const auto mask = torch::tensor(std::vector<float>{1, 1, 1, 0, 1, 0});
      batch.inputs["image"] = {pixels, {}, mask};
      add("image", pixels);
      add("image_mask", mask);
    }
  }
  batch.labels = torch::zeros({B}, torch::kLong);
  at::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = model->forward(batch);
  }
  const auto inputs_path = (dir_.path() / "inputs.json").string();
  std::ofstream(inputs_path) << inputs.dump();

  auto check = [&](const std::string& what, const test::CliResult& r) {
    ASSERT_EQ(r.code, 0) << what << ": " << r.dump();
    const auto logits = json::parse(r.out).at("logits");
    ASSERT_EQ(logits.size(), static_cast<size_t>(B)) << what;
    double worst = 0;
    for (int64_t i = 0; i < B; ++i) {
      ASSERT_EQ(logits[i].size(), static_cast<size_t>(expected.size(1))) << what;
      for (int64_t k = 0; k < expected.size(1); ++k) {
        worst = std::max(worst, std::abs(logits[i][k].get<double>() - expected[i][k].item<double>()));
      }
    }
    std::printf("%s: largest logit difference from mmintent's %.3g\n", what.c_str(), worst);
    EXPECT_LE(worst, 1e-4) << what << ": the largest logit difference from mmintent's";
  };

  const std::string tools = std::string(MMINTENT_SOURCE_DIR) + "/tools/export/";
  const auto ts = (dir_.path() / "model.torchscript.pt").string();
  const auto e = cli({"export", run_dir, "--format", "torchscript", "--out", ts});
  ASSERT_EQ(e.code, 0) << e.dump();
  EXPECT_NE(e.out.find("inputs: " + [&] {
              std::string names;
              for (const auto& n : inputs["order"]) names += (names.empty() ? "" : " ") + n.get<std::string>();
              return names;
            }() + "; output: logits"),
            std::string::npos)
      << e.dump();
  check("torchscript", test::run_cli("/usr/bin/python3", {tools + "mmintent_export.py", "run", ts, inputs_path}, dir_.path()));

  const auto onnx = (dir_.path() / "model.onnx").string();
  const auto o = cli({"export", run_dir, "--format", "onnx", "--out", onnx});
  ASSERT_EQ(o.code, 0) << o.dump();
  EXPECT_EQ(o.err.find("not checked"), std::string::npos) << "python3-onnx checked the graph: " << o.dump();
  // Nothing but the two exports was left next to them.
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir_.path())) {
    const auto name = entry.path().filename().string();
    if (name.find("model.") == 0) left.push_back(name);
  }
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"model.onnx", "model.torchscript.pt"}));

  if (!fs::exists(tools + "node_modules/onnxruntime-node") ||
      test::run_cli("/bin/sh", {"-c", "command -v node"}, dir_.path()).code != 0) {
    GTEST_SKIP() << "no node with tools/export/node_modules/onnxruntime-node (scripts/setup.sh --dev "
                    "installs it): the ONNX file is written and checked but not run";
  }
  check("onnx", test::run_cli("/bin/sh", {"-c", "node \"$0\" \"$1\" \"$2\"", tools + "run_onnx.js", onnx, inputs_path},
                              dir_.path()));
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, ExportNetworkTest,
    ::testing::Values(
        ArchitectureCase{"FixtureGruMaxConcat", {}},
        ArchitectureCase{"BiLstm2LastGatedAvgPool",
                         {"model.text_encoder.type=lstm", "model.text_encoder.bidirectional=true",
                          "model.text_encoder.num_layers=2", "model.text_encoder.pooling=last",
                          "model.fusion.type=gated", "model.fusion.dim=12", "model.head.dropout=0.2",
                          "model.image_encoder.pool=avg", "model.image_encoder.convs_per_block=2",
                          "model.image_encoder.dropout=0.1"}},
        ArchitectureCase{"TextOnlyBiGruMean",
                         {"model.modalities=[text]", "model.text_encoder.bidirectional=true",
                          "model.text_encoder.pooling=mean", "model.head.hidden=[]"}},
        ArchitectureCase{"ImageOnlyNoNormNoPool",
                         {"model.modalities=[image]", "model.image_encoder.batch_norm=false",
                          "model.image_encoder.pool=none"}},
        ArchitectureCase{"AudioBiGru2Mean", {"model.audio_encoder.num_layers=2"}, /*tones=*/true},
        ArchitectureCase{"AudioGlobalNormGru", {"data.audio.normalize=global"}, /*tones=*/true},
        ArchitectureCase{"AudioLstmLast",
                         {"model.audio_encoder.type=lstm", "model.audio_encoder.bidirectional=false",
                          "model.audio_encoder.pooling=last"},
                         /*tones=*/true}),
    [](const ::testing::TestParamInfo<ArchitectureCase>& info) { return info.param.name; });

TEST_F(ExportTest, OnnxWithoutPyTorchSaysWhatToInstallAndLeavesNothing) {
  const auto out = (dir_->path() / "nopython" / "model.onnx");
  fs::create_directories(out.parent_path());
  const auto r = cli({"export", run_dir_, "--format", "onnx", "--out", out.string(), "--python", "/nonexistent/python3"});
  EXPECT_EQ(r.code, 1) << r.dump();
  EXPECT_NE(r.err.find("exporting to onnx with /nonexistent/python3 failed"), std::string::npos) << r.dump();
  EXPECT_NE(r.err.find("apt-get install python3-torch python3-onnx"), std::string::npos) << r.dump();
  EXPECT_TRUE(fs::is_empty(out.parent_path())) << "nothing half-written";
}

}  // namespace
}  // namespace mmintent
