// Distillation's data side: the teacher's probabilities once per sample, handed out by index.

#include "mmintent/error.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/distill.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <torch/torch.h>

using namespace mmintent;

namespace {

class DistillTest : public test::SeededTest {};

IntentClassifier small_model() {
  IntentClassifierOptions o;
  o.num_classes(8).modalities({"text", "image"});
  o.text(TextEncoderOptions().vocab_size(30).embedding_dim(8).hidden_size(12));
  o.image(ImageEncoderOptions().channels({4, 8}).out_dim(10));
  o.head(HeadOptions().hidden({16}).dropout(0.3));
  return IntentClassifier(o);
}

TEST_F(DistillTest, TeacherProbabilitiesAreItsSoftenedOutputsByIndexAndReachEveryShuffledBatch) {
  auto teacher = small_model();
  teacher->train();  // dropout on: teacher_probabilities must still evaluate in eval mode
  test::SyntheticSource in_order(20, 6, 3, /*shuffle=*/true);  // shuffled: rows still by index
  const auto probs = teacher_probabilities(teacher, in_order, torch::kCPU, Precision::fp32, 20, 2.0);
  EXPECT_TRUE(teacher->is_training()) << "the teacher's mode is restored";
  teacher->eval();
  torch::NoGradGuard no_grad;
  const auto all = in_order.all();
  const auto expected = torch::softmax(teacher->forward(all) / 2.0, 1);
  ASSERT_EQ(probs.sizes(), expected.sizes());
  EXPECT_TRUE(torch::allclose(probs.index_select(0, all.indices), expected, 1e-5, 1e-6));

  test::SyntheticSource training(20, 6, 4, /*shuffle=*/true);
  TeacherSource source(training, probs);
  EXPECT_EQ(source.num_batches(), training.num_batches());
  source.start_epoch(1);
  int64_t seen = 0;
  while (auto b = source.next()) {
    ASSERT_TRUE(b->teacher.defined());
    EXPECT_TRUE(torch::equal(b->teacher, probs.index_select(0, b->indices)));
    seen += b->size();
  }
  EXPECT_EQ(seen, 20);
  // A teacher pass that misses samples (the table is larger than the source) is refused.
  test::SyntheticSource fewer(12, 6, 3, false);
  EXPECT_THROW(teacher_probabilities(teacher, fewer, torch::kCPU, Precision::fp32, 20, 2.0), Error);
  EXPECT_THROW(teacher_probabilities(teacher, fewer, torch::kCPU, Precision::fp32, 12, 0.0), Error);
}

}  // namespace
