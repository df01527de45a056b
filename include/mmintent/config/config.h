#pragma once
/// The typed configuration of a run. YAML keys equal field names (see docs/CONFIG.md, "Config
/// reference"); defaults here are the YAML defaults. Sizes that come from the data (vocabulary,
/// number of intents, image channels) are not configured: the caller fills them in.

#include "mmintent/data/audio.h"
#include "mmintent/data/image.h"
#include "mmintent/data/manifest.h"
#include "mmintent/data/tokenizer.h"
#include "mmintent/evaluation/calibration.h"
#include "mmintent/policy/decision.h"
#include "mmintent/policy/rewrite.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/trainer.h"

#include <map>
#include <string>
#include <vector>

namespace mmintent {

struct RuntimeConfig {
  std::string device = "auto";  ///< auto | cpu | cuda | cuda:N
  int64_t threads = 0;          ///< LibTorch intra-op threads; 0 = one per core
  int64_t seed = 42;
  /// fp32, or bf16: forward passes under autocast to bfloat16 (training, evaluation and
  /// prediction; see training/precision.h).
  std::string precision = "fp32";
  /// Keep freed memory in the process for reuse (glibc's malloc; training/device.h).
  bool keep_freed_memory = true;
};

struct TextConfig {
  /// A sentencepiece model to load; empty: train one on the training texts (saved in the run).
  std::string tokenizer;
  TokenizerTrainOptions train;  ///< vocab_size, model_type, character_coverage
  int64_t max_length = 64;      ///< tokens kept per text
};

struct LoaderConfig {
  int64_t batch_size = 32;
  int64_t eval_batch_size = 256;
  /// Worker threads preparing batches (0 = in the training thread). Together with
  /// runtime.threads they should not exceed the cores.
  int64_t num_workers = 1;
  int64_t prefetch = 2;  ///< batches prepared ahead per worker
  bool shuffle = true;
  bool drop_last = false;
};

struct DataConfig {
  std::string train, val, test;  ///< manifests; val and test may be empty
  std::string format = "auto";   ///< auto | jsonl | csv | tsv
  ManifestFields fields;
  std::string labels;             ///< optional label list; default: built from train
  std::string unknown_labels = "error";  ///< error | skip: val/test labels train never saw
  std::string on_bad_sample = "error";   ///< error | skip (skips are reported)
  bool allow_missing_text = false;
  bool allow_missing_image = false;
  bool allow_missing_audio = false;
  ImageOptions image;
  /// Audio reading and features (the audio file's field is `field`, default "audio").
  AudioOptions audio;
  AugmentOptions augment;
  bool cache_images = true;  ///< decode every image once and keep it in memory
  TextConfig text;
  LoaderConfig loader;
};

/// Warm start (`model.init`): parameters copied from another run's weights before the first
/// step (training/checkpoint.h: warm_start), e.g. an audio encoder trained on a larger speech set.
struct InitConfig {
  /// A run directory (its model.pt) or a checkpoint file; empty: random initialisation.
  std::string from;
  /// Name prefixes of the tensors taken (e.g. audio_encoder): each must name a part of this
  /// model, whose every tensor the file must hold with the same shape. Empty: every tensor
  /// whose name and shape match, the rest left as initialised.
  std::vector<std::string> modules;
};

struct ModelConfig {
  std::vector<std::string> modalities{"text", "image"};
  TextEncoderOptions text_encoder;
  ImageEncoderOptions image_encoder;
  AudioEncoderOptions audio_encoder;  ///< n_mels comes from data.audio
  FusionOptions fusion;
  HeadOptions head;
  /// Plug-in modalities' settings (core/modality.h), by modality name.
  std::map<std::string, ModalitySettings> plugins;
  InitConfig init;

  bool uses(const std::string& modality) const;
};

struct EvalConfig {
  std::vector<std::string> splits{"val", "test"};
  std::vector<int64_t> top_k{1, 3};
  int64_t listed_top = 3;  ///< candidates listed per misclassified sample
  bool plots = true;
};

/// Out-of-scope handling (e.g. CLINC150's "oos" samples).
struct OosConfig {
  /// The label that marks out-of-scope samples in the manifests; empty: no OOS handling.
  std::string label;
  /// "class": out-of-scope is one more trained class. "threshold": out-of-scope samples are
  /// left out of training; at prediction a score under the threshold means OOS. "both":
  /// out-of-scope is a trained class, and a sample whose score is under the threshold is out of
  /// scope as well.
  std::string method = "class";
  /// The score the threshold of methods threshold and both applies to (higher: more in
  /// scope): max_prob, the top calibrated probability among in-scope intents; energy, T
  /// logsumexp(logits / T) with T = 1 over the in-scope logits (Liu et al. 2020; not for
  /// ensembles); mahalanobis, minus the squared Mahalanobis distance of the fused features to
  /// the nearest in-scope class mean, shared covariance (Lee et al. 2018), fitted on data.train
  /// and kept in the run (oos_mahalanobis.pt).
  std::string score = "max_prob";
  /// methods threshold and both: a fixed value (in (0, 1), score max_prob only), or -1 to
  /// choose it on the validation split.
  double threshold = -1;
  /// How a threshold is chosen on val. -1: the one with the highest accuracy over all val
  /// samples, out-of-scope counted as a class (Larson et al. 2019; where val holds few
  /// out-of-scope samples it rejects few). In [0, 1): the highest threshold that costs at most
  /// this much in-scope accuracy on val (0.01: one point), i.e. the most out-of-scope samples
  /// caught for that price; it needs no out-of-scope samples in val.
  double max_in_scope_loss = -1;
};

/// An ensemble trained by `mmintent train` (app/ensemble.h): with members >= 2 it trains that
/// many members, each into output.dir/members/<i> with its own seed and overrides, then
/// combines them into output.dir as `mmintent ensemble` does.
struct EnsembleConfig {
  int64_t members = 1;  ///< 1: one model, no ensemble
  /// The members' runtime.seed; empty: runtime.seed, runtime.seed + 1, ...
  std::vector<int64_t> seeds;
  /// Per member, its KEY=VALUE overrides separated by spaces (e.g. "model.text_encoder.type=gru"; "" for
  /// none); empty: no member has any. They may not change what the members read (modalities,
  /// image, audio and text length settings, out-of-scope label and method).
  std::vector<std::string> overrides;
};

/// `mmintent tune`: updating a trained run from a person's feedback (see app/tune.h). The run's
/// model, optimizer type, weight decay, grad_clip, label smoothing, class weights and early
/// stopping are reused; these keys set what differs from training.
struct TuneConfig {
  int64_t epochs = 3;               ///< passes over the feedback (plus its replay)
  double lr = 0.0005;               ///< learning rate (the run's optimizer type and betas)
  std::string scheduler = "cosine"; ///< constant | cosine (to 0 over the tune steps, no warm-up)
  int64_t batch_size = 32;
  /// Training samples replayed per feedback sample and epoch (a fresh seeded draw from the
  /// run's data.train each epoch), so the model does not forget; 0 = feedback only.
  double replay_ratio = 1.0;
  /// uniform: a plain random draw; training: the replay makes up for classes the feedback
  /// under-represents, so each epoch keeps the training split's class mix.
  std::string replay_mix = "uniform";
  /// Weight of the unlikelihood term -log(1 - p_rejected) of a rejected prediction.
  double rejection_weight = 1.0;
  /// What is trained: full (every weight), head (only the fusion and the head; the encoders and
  /// their batch-norm statistics stay as they are: fewer trainable parameters, less
  /// forgetting) or lora (low-rank adapters over frozen weights, models/low_rank.h: the new
  /// run holds only the adapter, adapter.pt, over the base run's model.pt).
  std::string method = "full";
  /// The adapters of method lora: rank, alpha (the delta is scaled by alpha / rank) and targets
  /// (linear: every linear layer; rnn: the recurrent input matrices; embedding: the token
  /// embeddings).
  LowRankOptions lora;
  /// The same as method: head (kept for configs that say it so).
  bool freeze_encoders = false;
  /// How the feedback teaches (training/loss.h): supervised (labels, rejections as a penalty)
  /// or an off-policy objective on logged propensities, ips or snips (reward 1 accepted, 0
  /// rejected or corrected; a correction also trains its label). ips and snips need a
  /// "propensity" on every feedback record.
  std::string objective = "supervised";
  double clip = 100;     ///< ips / snips: the inverse propensity 1 / p0 is clipped to this
  double baseline = 0;   ///< ips: the reward baseline (BanditNet's translation) in [0, 1]
  /// Share of the feedback (whole distinct inputs, a seeded draw) held out of training for the
  /// off-policy estimate of the tuned policy's reward (needs propensities); 0 = none.
  double holdout = 0;
};

/// `mmintent serve`: the HTTP service (serve/server.h). Read from the run's config, then from
/// overrides given to `serve`.
/// HTTPS for `mmintent serve`: both set, or neither (plain HTTP).
struct TlsConfig {
  std::string cert;  ///< PEM certificate (chain) file
  std::string key;   ///< PEM private key file
};

struct ServeConfig {
  /// Address to bind. Without api_keys_file only a loopback address (127.0.0.1, ::1,
  /// localhost) is allowed, unless allow_unauthenticated is true.
  std::string host = "127.0.0.1";
  int64_t port = 8080;  ///< 0 = any free port (printed at start)
  /// HTTP worker threads: connections served at once (a keep-alive connection holds one while
  /// it is open; more connections than threads wait for a free one).
  int64_t threads = 32;
  /// Micro-batching: concurrent predict requests are grouped into one forward pass of up to
  /// max_batch inputs, waiting at most max_wait_ms for the batch to fill; 1 = no batching.
  int64_t max_batch = 32;
  double max_wait_ms = 2;
  /// Inputs waiting for the model at most; a request that would exceed it gets 503.
  int64_t max_queue = 256;
  int64_t max_body_bytes = 8 << 20;  ///< larger request bodies get 413
  int64_t max_inputs = 64;           ///< inputs in one batch request (an array) at most
  int64_t top_k = 3;                 ///< intents returned when a request gives no top_k
  double read_timeout_s = 10;        ///< a client slower than this to send is dropped
  double write_timeout_s = 10;
  /// One API key per line as the lowercase hex SHA-256 of the key ('#' starts a comment);
  /// clients send "Authorization: Bearer KEY". Empty: no keys (loopback only, see host).
  std::string api_keys_file;
  bool allow_unauthenticated = false;
  /// Keys (same format) for the admin endpoints (POST /v1/admin/reload); API keys never
  /// grant them. Empty: admin endpoints are open only when api_keys_file is empty too.
  std::string admin_keys_file;
  TlsConfig tls;
  /// Log each request's text and result (off: only method, path, status and time).
  bool log_requests = false;
  /// POST /v1/feedback appends here, in the format `mmintent tune --feedback` reads; uploaded
  /// images go to <log name>_images/ beside it, uploaded audio to <log name>_audio/. Empty:
  /// feedback is off (404).
  std::string feedback_log;
  /// Predictions remembered for feedback by id (the oldest forgotten first).
  int64_t feedback_window = 10000;
  /// Low-rank adapters served over the run (tune.method lora), by name -> adapter run
  /// directory: a request's "adapter" field picks one. Each must adapt the served run's
  /// model.pt (checked by its SHA-256); each is held merged, a full copy of the model.
  /// Names: 1 to 64 letters, digits, '_' or '-'.
  std::map<std::string, std::string> adapters;

  /// Whether `name` may name an adapter (serve.adapters, a request's "adapter" field).
  static bool valid_adapter_name(const std::string& name);
};

struct OutputConfig {
  std::string dir = "runs/default";
  bool overwrite = false;  ///< allow writing into a non-empty run directory
  /// When dir is not empty, write to the first free DIR-2, DIR-3, ... instead (checked before
  /// overwrite). Not under several processes, nor when resuming.
  bool numbered = false;
};

struct Config {
  std::string source;  ///< file the config was read from
  /// What the loader chose for keys the config left out because a split is missing (e.g. no
  /// data.val: early stopping off), one sentence each; `train` logs them.
  std::vector<std::string> adapted;
  RuntimeConfig runtime;
  DataConfig data;
  ModelConfig model;
  /// device and seed are taken from runtime, not from this section.
  TrainerOptions train;
  EvalConfig eval;
  OosConfig oos;
  CalibrationOptions calibration;  ///< temperature scaling fitted on val after training
  DecisionOptions decision;        ///< accept / clarify / fallback thresholds
  RewriteOptions rewrite;          ///< the request sent to the assistant behind
  TuneConfig tune;
  EnsembleConfig ensemble;
  /// Multi-process runs (torchrun): backend, timeout, gradient bucket size.
  DistributedOptions distributed;
  OutputConfig output;
  ServeConfig serve;

  /// The trainer's options with device, precision and seed filled in (the files it writes come
  /// from the run directory: RunDirectory::trainer_files).
  TrainerOptions trainer_options() const;
  /// The model's options for a vocabulary and intent count found in the data.
  IntentClassifierOptions model_options(int64_t vocab_size, int64_t num_classes) const;
};

}  // namespace mmintent
