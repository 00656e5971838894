// Fuzzes the gateway's request reader against Beast's parser: the input's first byte chooses the header and
// body limits and how the bytes arrive, the rest is what a client sent. IncomingParser reads a plain head in
// one pass and hands anything else to Beast's parser; either way the outcome must be Beast's own: the same
// error, the same bytes consumed, the same request line, kept fields, keep-alive and body.
//
// Beast is the oracle here, as the gateway builds it (NDEBUG): its asserts are off for this target.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "../unit/server/incoming_drive.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sluice::incoming_drive;
  if (size < 1) return 0;
  const unsigned knobs = data[0];
  const std::string_view wire(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::uint32_t header_limit = (knobs & 3) == 0 ? 8192u : 16u + 48u * (knobs & 3);
  const std::uint64_t body_limit = (knobs & 12) == 0 ? (1u << 20) : 16u * ((knobs >> 2) & 3);
  std::vector<std::size_t> pieces;
  if (knobs & 16) pieces = {wire.size() / 2 + 1};
  if (knobs & 32) pieces = {1, 7, 30, 2};
  const auto mine = run(wire, pieces, false, header_limit, body_limit);
  const auto beast = run(wire, pieces, true, header_limit, body_limit);
  SLUICE_FUZZ_CHECK(mine == beast, "the one-pass read gives Beast's outcome");
  return 0;
}
