// Reads float32 feature maps (B, C, H, W) from a .npy file and writes, with cnnviz::kernels from
// an installed cnnviz package:
//   gram.npy:    the Gram matrices (B, C, C) = F F^T / (C * H * W), F = the maps as (B, C, H * W)
//                (the style statistic of Gatys et al.);
//   guided.npy:  the guided-ReLU backward (B, C, H, W) of the maps for an upstream gradient of
//                ones, i.e. 1 where a feature is > 0 and 0 elsewhere.
// Usage: gram_demo in.npy gram.npy guided.npy
//
// The .npy reader / writer below is self-contained and handles what this demo needs: format
// versions 1-3, C order, little-endian float32 ('<f4').
#include <cctype>
#include <cnnviz/gram.hpp>
#include <cnnviz/relu.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Array {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

/// The text after `key` (a quoted dict key such as 'shape') and its colon in a .npy header.
std::string header_value(const std::string& header, const std::string& key,
                         const std::string& path) {
  std::size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) at = header.find("\"" + key + "\"");
  if (at == std::string::npos) throw std::runtime_error(path + ": .npy header has no " + key);
  at = header.find(':', at);
  if (at == std::string::npos) throw std::runtime_error(path + ": malformed .npy header");
  ++at;
  while (at < header.size() && std::isspace(static_cast<unsigned char>(header[at]))) ++at;
  return header.substr(at);
}

bool little_endian_host() {
  const std::uint16_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

/// Reads a C-order little-endian float32 .npy file.
Array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    throw std::runtime_error(path + ": not a .npy file");
  }
  const auto byte = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i]));
  };
  const unsigned major = byte(6);
  std::size_t header_len, header_at;
  if (major == 1) {
    header_len = byte(8) | byte(9) << 8;
    header_at = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw std::runtime_error(path + ": truncated .npy header");
    header_len = byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
    header_at = 12;
  } else {
    throw std::runtime_error(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (bytes.size() < header_at + header_len) {
    throw std::runtime_error(path + ": truncated .npy header");
  }
  const std::string header = bytes.substr(header_at, header_len);

  const std::string descr = header_value(header, "descr", path);
  if (descr.compare(0, 5, "'<f4'") != 0 && descr.compare(0, 5, "\"<f4\"") != 0) {
    throw std::runtime_error(path + ": expected little-endian float32 ('<f4'), got " +
                             descr.substr(0, descr.find(',')));
  }
  if (header_value(header, "fortran_order", path).compare(0, 5, "False") != 0) {
    throw std::runtime_error(path + ": expected C order (fortran_order: False)");
  }
  Array a;
  const std::string shape = header_value(header, "shape", path);
  if (shape.empty() || shape[0] != '(') throw std::runtime_error(path + ": malformed shape");
  std::int64_t count = 1;
  for (std::size_t i = 1; i < shape.size() && shape[i] != ')';) {
    if (std::isdigit(static_cast<unsigned char>(shape[i]))) {
      std::size_t used = 0;
      const std::int64_t dim = std::stoll(shape.substr(i), &used);
      a.shape.push_back(dim);
      count *= dim;
      i += used;
    } else {
      ++i;
    }
  }
  const std::size_t data_at = header_at + header_len;
  const std::size_t nbytes = static_cast<std::size_t>(count) * sizeof(float);
  if (bytes.size() - data_at < nbytes) {
    throw std::runtime_error(path + ": file holds fewer values than its shape says");
  }
  if (!little_endian_host()) throw std::runtime_error("this demo needs a little-endian host");
  a.data.resize(static_cast<std::size_t>(count));
  std::memcpy(a.data.data(), bytes.data() + data_at, nbytes);
  return a;
}

/// Writes a C-order little-endian float32 .npy file (format version 1.0).
void write_npy(const std::string& path, const std::vector<std::int64_t>& shape,
               const std::vector<float>& data) {
  std::string dims;  // "a, b, c", or "a," for one dimension (a Python tuple)
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dims += (i ? ", " : "") + std::to_string(shape[i]);
  }
  if (shape.size() == 1) dims += ",";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64 bytes.
  const std::size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error(path + ": cannot open for writing");
  const char preamble[10] = {'\x93',
                             'N',
                             'U',
                             'M',
                             'P',
                             'Y',
                             1,
                             0,
                             static_cast<char>(header.size() & 0xff),
                             static_cast<char>(header.size() >> 8)};
  out.write(preamble, sizeof preamble);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(float)));
  if (!out) throw std::runtime_error(path + ": write failed");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s in.npy gram.npy guided.npy\n", argv[0]);
    return 2;
  }
  try {
    const Array features = read_npy(argv[1]);
    if (features.shape.size() != 4) {
      throw std::runtime_error(std::string(argv[1]) + ": expected feature maps (B, C, H, W), got " +
                               std::to_string(features.shape.size()) + " dimensions");
    }
    const std::int64_t b = features.shape[0], c = features.shape[1];
    const std::int64_t n = features.shape[2] * features.shape[3];
    if (c * n == 0) throw std::runtime_error("feature maps must have C * H * W > 0");

    std::vector<float> gram(static_cast<std::size_t>(b * c * c));
    cnnviz::gram(features.data.data(), gram.data(), b, c, n, static_cast<float>(c * n));
    write_npy(argv[2], {b, c, c}, gram);

    const std::vector<float> ones(features.data.size(), 1.f);
    std::vector<float> guided(features.data.size());
    cnnviz::relu_backward(features.data.data(), ones.data(), guided.data(),
                          static_cast<std::int64_t>(guided.size()), cnnviz::ReluMode::guided);
    write_npy(argv[3], features.shape, guided);

    std::printf("%s: features (%lld, %lld, %lld, %lld) -> gram (%lld, %lld, %lld) [%s kernel]\n",
                argv[0], static_cast<long long>(b), static_cast<long long>(c),
                static_cast<long long>(features.shape[2]),
                static_cast<long long>(features.shape[3]), static_cast<long long>(b),
                static_cast<long long>(c), static_cast<long long>(c), cnnviz::gram_kernel_name());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gram_demo: %s\n", e.what());
    return 1;
  }
  return 0;
}
