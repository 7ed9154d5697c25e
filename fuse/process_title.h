// What `ps` shows for this process: "lazystore [supervisor] /nix/store", "lazystore [server 2]
// /nix/store". The words replace the command line in place (its original length bounds them);
// argv[0]'s word stays first so that pidof and killall still know the program.
#pragma once

#include <string>
#include <vector>

namespace lazystore {

// false when the command line cannot be found (then nothing changes).
bool set_process_title(const std::vector<std::string>& words);

}  // namespace lazystore
