// One read of many bytes as many READs in flight on one connection (NFSv3 and NFSv4): the range
// is cut into pieces, up to `window` of them are outstanding at once, a piece the server
// answers short (without end of file) is asked again for the rest, and the answer ends at the
// first end of file. Filling the link takes bandwidth x round trip bytes in flight.
#pragma once

#include <cerrno>
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <deque>
#include <span>
#include <string>

#include "nfs_rpc.h"

namespace lazystore {

class NfsReadWindow {
 public:
  struct Piece {
    NfsReadWindow* window;
    uint64_t offset;
    std::span<std::byte> buf;
  };

  // context: what the protocol's replies need (piece->window->context()).
  NfsReadWindow(uint64_t offset, std::span<std::byte> buf, size_t piece_bytes, size_t window, void* context = nullptr)
      : start_(offset),
        end_(offset + buf.size()),
        eof_at_(end_),
        buf_(buf),
        window_(window ? window : 1),
        context_(context) {
    size_t piece = piece_bytes ? piece_bytes : buf.size();
    for (uint64_t at = offset; at < end_; at += piece) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(piece, end_ - at));
      to_send_.push_back(Piece{this, at, buf.subspan(static_cast<size_t>(at - offset), n)});
    }
  }

  // Sends every piece through send(piece) (false: it could not be queued, *error set) and
  // services the connection until all are answered. Returns the bytes read (short only at end
  // of file) or a negative errno with *error set; the pump's negative errno as it is.
  template <class Send>
  int64_t run(Send&& send, const NfsPump& pump, std::string* error) {
    for (;;) {
      while (failure_ == 0 && in_flight_ < window_ && !to_send_.empty()) {
        Piece* piece = new Piece(to_send_.front());
        to_send_.pop_front();
        if (piece->offset >= eof_at_) {  // beyond the end of the file: nothing to ask
          delete piece;
          continue;
        }
        if (!send(piece)) {
          delete piece;
          if (failure_ == 0) failure_ = -EIO;
          break;
        }
        in_flight_++;
      }
      if (in_flight_ == 0) break;
      int rc = pump([this] { return in_flight_ == 0 || (failure_ == 0 && in_flight_ < window_ && !to_send_.empty()); },
                    answers_);
      if (rc < 0) return rc;  // cancelled: every callback has run
    }
    if (failure_ != 0) {
      if (error && error->empty()) *error = error_;
      return failure_;
    }
    return static_cast<int64_t>(std::min(eof_at_, end_) - start_);
  }

  void* context() const { return context_; }

  // From a reply: `bytes` read into the piece (or a negative errno, `why`), `eof` seen.
  // Frees the piece.
  static void answered(Piece* piece, int64_t bytes, bool eof, const std::string& why = {}) {
    NfsReadWindow& w = *piece->window;
    w.in_flight_--;
    w.answers_++;
    if (bytes < 0) {
      if (w.failure_ == 0) {
        w.failure_ = bytes;
        w.error_ = why;
      }
    } else {
      auto n = static_cast<uint64_t>(bytes);
      uint64_t got_to = piece->offset + n;
      if (eof) {
        if (got_to < w.eof_at_) w.eof_at_ = got_to;
      } else if (n < piece->buf.size()) {
        if (n == 0) {
          if (w.failure_ == 0) {
            w.failure_ = -EIO;
            w.error_ = "the server answered a READ with no data and no end of file";
          }
        } else {
          w.to_send_.push_front(Piece{&w, got_to, piece->buf.subspan(static_cast<size_t>(n))});
        }
      }
    }
    delete piece;
  }

 private:
  const uint64_t start_;
  const uint64_t end_;
  uint64_t eof_at_;  // the end of the file, once a reply said so
  std::span<std::byte> buf_;
  const size_t window_;
  void* const context_;
  std::deque<Piece> to_send_;
  size_t in_flight_ = 0;
  size_t answers_ = 0;
  int64_t failure_ = 0;
  std::string error_;
};

}  // namespace lazystore
