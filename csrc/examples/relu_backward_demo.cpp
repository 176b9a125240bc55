// Prints the three ReLU backward modes on a 3x3 example and checks them against the known answer
// (exit status 1 on a mismatch), using cnnviz::kernels from an installed cnnviz package.
#include <cnnviz/relu.hpp>
#include <cstdio>
#include <vector>

int main() {
  using cnnviz::ReluMode;
  const std::vector<float> x = {1, -1, 5, 2, -5, -7, -3, 2, 4};  // forward input of the ReLU
  const std::vector<float> g = {-2, 3, -1, 6, -3, 1, 2, -1, 3};  // gradient w.r.t. its output
  const struct {
    ReluMode mode;
    std::vector<float> expected;
  } cases[] = {
      {ReluMode::gradient, {-2, 0, -1, 6, 0, 0, 0, -1, 3}},
      {ReluMode::guided, {0, 0, 0, 6, 0, 0, 0, 0, 3}},
      {ReluMode::deconvnet, {0, 3, 0, 6, 0, 1, 2, 0, 3}},
  };
  bool ok = true;
  for (const auto& c : cases) {
    std::vector<float> out(x.size());
    cnnviz::relu_backward(x.data(), g.data(), out.data(), static_cast<std::int64_t>(x.size()),
                          c.mode);
    std::printf("%-9s", cnnviz::relu_mode_name(c.mode));
    for (std::size_t i = 0; i < out.size(); ++i) std::printf("%s%3g", i % 3 ? " " : " | ", out[i]);
    std::printf("\n");
    ok = ok && out == c.expected;
  }
  std::printf(ok ? "matches the expected result\n" : "MISMATCH with the expected result\n");
  return ok ? 0 : 1;
}
