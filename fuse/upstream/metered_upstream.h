// Counts every call into the real upstream (requests, errors, file bytes, latency) for the stats.
#pragma once

#include "stats.h"
#include "upstream.h"

namespace lazystore {

class MeteredUpstream final : public Upstream {
 public:
  MeteredUpstream(std::unique_ptr<Upstream> inner, Stats& stats) : inner_(std::move(inner)), stats_(stats) {}

  std::string describe() const override { return inner_->describe(); }
  Status start() override { return inner_->start(); }
  Result<bool> exists(const StorePath& path) override {
    LatencyTimer timer(stats_.upstream_latency);
    return count(inner_->exists(path));
  }
  Result<std::vector<StorePath>> list_store() override {
    LatencyTimer timer(stats_.upstream_latency);
    return count(inner_->list_store());
  }
  Result<Tree> list_tree(const StorePath& path) override {
    LatencyTimer timer(stats_.upstream_latency);
    return count(inner_->list_tree(path));
  }
  Status walk_tree(const StorePath& path, TreeBuilder& builder) override {
    LatencyTimer timer(stats_.upstream_latency);
    return count(inner_->walk_tree(path, builder));
  }
  uint64_t read_window_bytes() override { return inner_->read_window_bytes(); }
  uint32_t read_alignment(const StorePath& path) override { return inner_->read_alignment(path); }
  Result<size_t> read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                      std::span<std::byte> buf) override {
    LatencyTimer timer(stats_.upstream_latency);
    auto got = count(inner_->read(path, tree, node, offset, buf));
    if (got) stats_.upstream_bytes += *got;
    return got;
  }
  Result<UpstreamStatfs> statfs() override {
    LatencyTimer timer(stats_.upstream_latency);
    return count(inner_->statfs());
  }

 private:
  template <class T>
  Result<T> count(Result<T> result) {
    stats_.upstream_requests++;
    if (!result) stats_.upstream_errors++;
    stats_.upstream_health.record(result ? 0 : result.error().code);
    return result;
  }

  std::unique_ptr<Upstream> inner_;
  Stats& stats_;
};

}  // namespace lazystore
