// explain_openvino: run an explainer exported by cnnviz (`cnnviz export-explainer`) with the
// OpenVINO C++ runtime, no Python and no cnnviz.
//
//   explain_openvino EXPLAINER.onnx IMAGE.ppm OUT [--target K] [--device CPU]
//
// IMAGE is a binary PPM (P6, maxval 255) of the model's input size (the size the exporter
// wrote into the graph's `pixels` input); the explainer's graph does the model card's
// preprocessing itself, so the pixels go in as they are, RGB 0-255. Writes OUT.pfm (the map,
// float32: grey PFM, or RGB PFM for the colour maps of guided backprop, deconvnet and Guided
// Grad-CAM) and OUT.pgm (a preview scaled by the map's largest |value|) and prints the explained
// class (the graph's `target` output: the predicted class, or K with --target).
//
// Inference runs in float32 (ov::hint::inference_precision): OpenVINO's CPU plugin otherwise
// picks bfloat16 on CPUs that have it, which moves the map by about 1e-2.

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <openvino/openvino.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Image {
  std::size_t width = 0;
  std::size_t height = 0;
  std::vector<unsigned char> rgb;  // height * width * 3, row-major, top row first
};

// The next header field of a PPM, skipping whitespace and # comments.
std::string ppm_token(std::istream& in) {
  std::string token;
  while (in && token.empty()) {
    const int c = in.get();
    if (c == '#') {
      std::string comment;
      std::getline(in, comment);
    } else if (c != EOF && !std::isspace(c)) {
      token.push_back(static_cast<char>(c));
      while (in && !std::isspace(in.peek()) && in.peek() != EOF) {
        token.push_back(static_cast<char>(in.get()));
      }
    }
  }
  return token;
}

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open the image " + path);
  if (ppm_token(in) != "P6") {
    throw std::runtime_error(path +
                             " is not a binary PPM (P6): convert it first, e.g. "
                             "python -c \"from PIL import Image; Image.open('in.png')"
                             ".convert('RGB').save('in.ppm')\"");
  }
  Image image;
  image.width = std::stoul(ppm_token(in));
  image.height = std::stoul(ppm_token(in));
  if (std::stoul(ppm_token(in)) != 255) {
    throw std::runtime_error(path + ": only 8-bit PPM (maxval 255) is read");
  }
  in.get();  // the single whitespace after maxval
  image.rgb.resize(image.width * image.height * 3);
  in.read(reinterpret_cast<char*>(image.rgb.data()),
          static_cast<std::streamsize>(image.rgb.size()));
  if (in.gcount() != static_cast<std::streamsize>(image.rgb.size())) {
    throw std::runtime_error(path + " is truncated");
  }
  return image;
}

// PFM: "Pf" (grey) or "PF" (RGB, channels interleaved), width height, scale -1
// (little-endian), rows from the bottom up. `map` is (H, W, channels), top row first.
void write_pfm(const std::string& path, const std::vector<float>& map, std::size_t height,
               std::size_t width, std::size_t channels) {
  std::ofstream out(path, std::ios::binary);
  out << (channels == 1 ? "Pf" : "PF") << "\n" << width << " " << height << "\n-1.0\n";
  const std::size_t row_size = width * channels;
  for (std::size_t row = height; row-- > 0;) {
    out.write(reinterpret_cast<const char*>(map.data() + row * row_size),
              static_cast<std::streamsize>(row_size * sizeof(float)));
  }
  if (!out) throw std::runtime_error("cannot write " + path);
}

// 8-bit PGM preview: |value| / max |value| (signed maps: 128 is zero).
void write_pgm(const std::string& path, const float* map, std::size_t height, std::size_t width) {
  const std::size_t count = height * width;
  float largest = 0.0f;
  bool negative = false;
  for (std::size_t i = 0; i < count; ++i) {
    largest = std::max(largest, std::fabs(map[i]));
    negative = negative || map[i] < 0.0f;
  }
  std::vector<unsigned char> grey(count, 0);
  for (std::size_t i = 0; i < count && largest > 0.0f; ++i) {
    const float unit = map[i] / largest;  // [-1, 1]
    const float level = negative ? 127.5f * (unit + 1.0f) : 255.0f * unit;
    grey[i] = static_cast<unsigned char>(std::lround(std::clamp(level, 0.0f, 255.0f)));
  }
  std::ofstream out(path, std::ios::binary);
  out << "P5\n" << width << " " << height << "\n255\n";
  out.write(reinterpret_cast<const char*>(grey.data()), static_cast<std::streamsize>(count));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string metadata(const std::shared_ptr<ov::Model>& model, const std::string& key) {
  // ONNX metadata_props land in the model's runtime info under "framework"
  if (!model->has_rt_info("framework", key)) return "?";
  return model->get_rt_info<std::string>("framework", key);
}

bool has_port(const std::vector<ov::Output<ov::Node>>& ports, const std::string& name) {
  for (const auto& port : ports) {
    if (port.get_names().count(name) != 0) return true;
  }
  return false;
}

int run(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: explain_openvino EXPLAINER.onnx IMAGE.ppm OUT [--target K] "
                 "[--device CPU]\n";
    return 2;
  }
  const std::string model_path = argv[1], image_path = argv[2], out = argv[3];
  std::string device = "CPU";
  long long target = -1;
  for (int i = 4; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::runtime_error(flag + " needs a value");
    if (flag == "--target") {
      target = std::stoll(argv[++i]);
    } else if (flag == "--device") {
      device = argv[++i];
    } else {
      throw std::runtime_error("unknown option " + flag + " (--target K, --device NAME)");
    }
  }

  ov::Core core;
  std::shared_ptr<ov::Model> model = core.read_model(model_path);
  if (!has_port(model->inputs(), "pixels")) {
    throw std::runtime_error(model_path +
                             " takes the model's own input, not pixels: export "
                             "it from a model with a model card or --preset so the graph "
                             "does the preprocessing");
  }
  const bool takes_target = has_port(model->inputs(), "target");
  if (takes_target && target < 0) {
    throw std::runtime_error(model_path + " was exported with --target input: give --target K");
  }
  if (!takes_target && target >= 0) {
    throw std::runtime_error(model_path + " bakes its target in (" +
                             metadata(model, "cnnviz.target") +
                             "): export it with --target input to choose the class here");
  }

  const Image image = read_ppm(image_path);
  const ov::PartialShape wanted = model->input("pixels").get_partial_shape();
  const bool fixed = wanted.rank().is_static() && wanted[1].is_static() && wanted[2].is_static();
  if (fixed && (static_cast<std::size_t>(wanted[1].get_length()) != image.height ||
                static_cast<std::size_t>(wanted[2].get_length()) != image.width)) {
    std::ostringstream message;
    message << image_path << " is " << image.width << "x" << image.height
            << "; the explainer takes " << wanted[2] << "x" << wanted[1]
            << " pixels: resize it first (as the model card says)";
    throw std::runtime_error(message.str());
  }
  std::map<std::string, ov::PartialShape> shapes{
      {"pixels", ov::PartialShape{1, static_cast<std::int64_t>(image.height),
                                  static_cast<std::int64_t>(image.width), 3}}};
  if (takes_target) shapes["target"] = ov::PartialShape{1};
  model->reshape(shapes);

  ov::CompiledModel compiled =
      core.compile_model(model, device, ov::hint::inference_precision(ov::element::f32));
  ov::InferRequest request = compiled.create_infer_request();
  ov::Tensor pixels(ov::element::f32, {1, image.height, image.width, 3});
  std::transform(image.rgb.begin(), image.rgb.end(), pixels.data<float>(),
                 [](unsigned char v) { return static_cast<float>(v); });
  request.set_tensor("pixels", pixels);
  ov::Tensor chosen(ov::element::i64, {1});
  if (takes_target) {
    chosen.data<std::int64_t>()[0] = target;
    request.set_tensor("target", chosen);
  }
  request.infer();

  // the map: (1, H, W), or (1, C, H, W) for colour methods (guided backprop, deconvnet,
  // Guided Grad-CAM: metadata cnnviz.map); written as (H, W, C), previewed as max |value|
  // over the channels (as cnnviz's Attribution.heatmap)
  const ov::Tensor map = request.get_tensor("map");
  const ov::Shape shape = map.get_shape();
  if (shape.size() != 3 && shape.size() != 4) {
    throw std::runtime_error("the map output is neither (N, H, W) nor (N, C, H, W)");
  }
  const std::size_t channels = shape.size() == 4 ? shape[1] : 1;
  const std::size_t height = shape[shape.size() - 2], width = shape[shape.size() - 1];
  if (channels != 1 && channels != 3) {
    throw std::runtime_error("a map of " + std::to_string(channels) + " channels (1 or 3)");
  }
  const float* values = map.data<const float>();
  std::vector<float> interleaved(height * width * channels), heat(height * width, 0.0f);
  for (std::size_t c = 0; c < channels; ++c) {
    for (std::size_t i = 0; i < height * width; ++i) {
      const float value = values[c * height * width + i];
      interleaved[i * channels + c] = value;
      heat[i] = channels == 1 ? value : std::max(heat[i], std::fabs(value));
    }
  }
  write_pfm(out + ".pfm", interleaved, height, width, channels);
  write_pgm(out + ".pgm", heat.data(), height, width);
  std::string explained = metadata(model, "cnnviz.target");  // a channel or neuron target
  if (takes_target) {
    explained = std::to_string(target);
  } else if (has_port(model->outputs(), "target")) {
    explained = std::to_string(request.get_tensor("target").data<const std::int64_t>()[0]);
  }
  std::cout << "method " << metadata(model, "cnnviz.method") << ", layer "
            << metadata(model, "cnnviz.layer") << ", opset " << metadata(model, "cnnviz.opset")
            << "\ntarget " << explained << "\nmap " << channels << "x" << height << "x" << width
            << " -> " << out << ".pfm, " << out << ".pgm\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "explain_openvino: error: " << error.what() << "\n";
    return 1;
  }
}
