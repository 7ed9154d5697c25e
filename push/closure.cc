#include "closure.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <queue>
#include <set>

#include "store_path.h"

namespace lazystore {

namespace {

constexpr int kMaxSymlinkHops = 40;

Result<std::string> store_path_of(std::string_view path) {
  auto parsed = StorePath::parse_absolute(path);
  if (!parsed) return parsed.error();
  return parsed->absolute();
}

}  // namespace

Result<std::string> resolve_store_path(const std::string& argument) {
  std::string prefix = std::string(StorePath::kStoreDir) + "/";
  std::filesystem::path current(argument);
  for (int hop = 0; hop <= kMaxSymlinkHops; ++hop) {
    std::string text = current.lexically_normal().string();
    if (text.starts_with(prefix)) return store_path_of(text);
    std::error_code ec;
    if (!std::filesystem::is_symlink(current, ec)) {
      std::error_code ec2;
      auto absolute = std::filesystem::absolute(current, ec2).lexically_normal();
      if (!ec2 && absolute.string().starts_with(prefix)) return store_path_of(absolute.string());
      if (!std::filesystem::exists(current, ec)) {
        return make_error(ENOENT, argument + ": no such file");
      }
      return make_error(EINVAL, argument + ": not a store path (nor a symlink to one)");
    }
    auto target = std::filesystem::read_symlink(current, ec);
    if (ec) return make_error(ec.value(), argument + ": " + ec.message());
    current = target.is_absolute() ? target : current.parent_path() / target;
    if (current.is_relative()) current = std::filesystem::absolute(current, ec);
  }
  return make_error(ELOOP, argument + ": too many levels of symbolic links");
}

Result<std::vector<serve::PathInfo>> order_by_references(std::vector<serve::PathInfo> infos) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < infos.size(); ++i) index.emplace(infos[i].path, i);
  std::vector<size_t> pending(infos.size(), 0);              // unsent references per path
  std::vector<std::vector<size_t>> referrers(infos.size());  // who waits for this path
  for (size_t i = 0; i < infos.size(); ++i) {
    std::set<std::string> seen;
    for (const auto& reference : infos[i].references) {
      if (reference == infos[i].path || !seen.insert(reference).second) continue;
      auto it = index.find(reference);
      if (it == index.end()) {
        return make_error(EINVAL, infos[i].path + " references " + reference + ", which is not in the closure");
      }
      ++pending[i];
      referrers[it->second].push_back(i);
    }
  }
  // Ready paths, smallest path first.
  auto by_path = [&](size_t a, size_t b) { return infos[a].path > infos[b].path; };
  std::priority_queue<size_t, std::vector<size_t>, decltype(by_path)> ready(by_path);
  for (size_t i = 0; i < infos.size(); ++i) {
    if (pending[i] == 0) ready.push(i);
  }
  std::vector<size_t> order;
  while (!ready.empty()) {
    size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t r : referrers[i]) {
      if (--pending[r] == 0) ready.push(r);
    }
  }
  if (order.size() != infos.size()) return make_error(EINVAL, "the references form a cycle");
  std::vector<serve::PathInfo> sorted;
  sorted.reserve(infos.size());
  for (size_t i : order) sorted.push_back(std::move(infos[i]));
  return sorted;
}

}  // namespace lazystore
