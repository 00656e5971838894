// Fuzzes the relay's answer reader against Beast's parser: the input's first byte chooses how the bytes arrive
// and the body buffer's size, the rest is what a backend sent. AnswerParser reads a plain head in one pass and
// hands anything else to Beast's parser; either way the head must read as Beast's response_parser reads it (the
// same bytes consumed, status, framing, keep-alive and kept fields), and so must every body Beast reads whole.
// Where Beast refuses a chunked body, ChunkedBody may refuse it otherwise, and it bounds size lines (8 KiB) and
// trailers (64 KiB) where Beast does not: inputs here stay under those (fuzz_chunked holds the two decoders to each
// other). Without chunks, the outcome is Beast's to the byte and the error.
//
// Beast is the oracle here, as the gateway builds it (NDEBUG): its asserts are off for this target.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "../unit/upstream/answer_drive.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sluice::answer_drive;
  if (size < 1) return 0;
  const unsigned knobs = data[0];
  const std::string_view wire(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::size_t piece = (knobs & 3) == 0 ? wire.size() : (knobs & 3) == 1 ? 1 : 7 + (knobs & 12);
  const std::size_t room = (knobs & 48) == 0 ? 4096 : (knobs >> 4) & 3;
  const auto m = mine(wire, piece, room);
  const auto b = beasts(wire, piece, room);
  // Trailer fields are not the head's (Beast's message holds them): compare the heads where Beast's fields
  // could only have come from the head.
  SLUICE_FUZZ_CHECK(m.by_beast || m.head_size == b.head_size, "a one-pass head is as long as Beast reads it");
  if (!m.chunked) {
    SLUICE_FUZZ_CHECK(m == b, "an answer without chunks reads as Beast reads it");
  } else {
    Read mh = m, bh = b;
    mh.content_type = mh.content_encoding = mh.retry_after = "";
    bh.content_type = bh.content_encoding = bh.retry_after = "";
    SLUICE_FUZZ_CHECK(mh.same_head(bh), "a chunked answer's head reads as Beast reads it");
    if (b.done && !b.ec.failed())
      SLUICE_FUZZ_CHECK(m.done && !m.ec.failed() && m.body == b.body, "whatever Beast decodes whole, so does the relay");
  }
  return 0;
}
