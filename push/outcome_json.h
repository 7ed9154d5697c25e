// JSON of what lazystore-push reports (--json) and of what a persistent connection hands back to
// its client: one nlohmann to_json/from_json pair per type, so both are the same document.
#pragma once

#include <nlohmann/json.hpp>

#include "push.h"
#include "root_commands.h"

namespace lazystore {

void to_json(nlohmann::json& j, const PushSummary& summary);
void from_json(const nlohmann::json& j, PushSummary& summary);
// The summary's fields plus "exit_code" and "error" (null on success).
void to_json(nlohmann::json& j, const PushOutcome& outcome);
void from_json(const nlohmann::json& j, PushOutcome& outcome);

void to_json(nlohmann::json& j, const PushRequest& request);
void from_json(const nlohmann::json& j, PushRequest& request);

void to_json(nlohmann::json& j, const RootEntry& root);
void to_json(nlohmann::json& j, const RootsOutcome& outcome);

// Parses a document made by to_json; a malformed one is EPROTO, never an exception.
Result<PushOutcome> push_outcome_from_json(std::string_view text);
Result<PushRequest> push_request_from_json(std::string_view text);

}  // namespace lazystore
