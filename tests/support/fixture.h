#pragma once
/// The small generated multimodal data set of the end-to-end tests: 4 intents = 2 actions
/// (told by the text) x 2 image kinds (told by a 16x16 grey image, bright on the left or the
/// right), and the config that trains on it.

#include <opencv2/core.hpp>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace mmintent::test {

/// The intent of (action, kind): "refund_left", "refund_right", "stock_left", "stock_right".
std::string fixture_intent(int action, int kind);

/// A 16x16 grey image of kind 0 (bright on the left) or 1 (bright on the right), with noise.
cv::Mat fixture_image(int kind, std::mt19937& rng);

/// Writes root/data/<split>.jsonl with `n` samples (balanced over the 4 intents, in turn) and
/// their images under root/data/img/; returns the manifest path.
std::string write_fixture_split(const std::filesystem::path& root, const std::string& split, int n,
                                unsigned seed);

/// The config for the fixture (data/{train,val,test}.jsonl relative to the config's folder;
/// CPU, GRU text encoder, small CNN, 6 epochs, batch 16), writing into `output_dir`.
std::string fixture_config(const std::string& output_dir);

/// The fixture's three splits (160 / 40 / 40 samples) and root/config.yaml writing into
/// `output_dir`; returns the config's path.
std::string write_fixture(const std::filesystem::path& root, const std::string& output_dir);

/// Trains `config` with `overrides` (KEY=VALUE), printing no tables: a finished run for tests.
void train_quietly(const std::string& config, const std::vector<std::string>& overrides);

}  // namespace mmintent::test
