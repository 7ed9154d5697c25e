// lazystore-ctl -m: mountinfo lines (escapes, optional fields, mounts on top of mounts) and the
// path a mount point is named by.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "ctl_mounts.h"

namespace lazystore {
namespace {

const char* kMountinfo =
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "40 22 0:45 / /nix/store rw,nosuid,nodev,relatime shared:20 - fuse.lazystore host:/nix/store "
    "ro,user_id=0,group_id=0,allow_other\n"
    "41 22 0:46 / /srv/with\\040space\\011tab ro,nosuid,nodev - fuse.lazystore "
    "nfs://h/nix/store?version=4 ro,user_id=0,group_id=0\n"
    "42 22 0:47 / /srv/over ro - fuse.lazystore file:///a ro\n"
    "43 22 0:48 / /srv/over rw - tmpfs tmpfs rw\n"
    "44 22 0:49 / /srv/under rw - tmpfs tmpfs rw\n"
    "45 22 0:50 / /srv/under ro master:3 propagate_from:2 - fuse.lazystore http://cache,http://b ro\n"
    "garbage line\n"
    "46 22 0:51 / /srv/short rw -\n";

TEST(Mountinfo, ParsesFieldsEscapesAndOptionalFields) {
  auto mounts = parse_mountinfo(kMountinfo);
  ASSERT_EQ(mounts.size(), 7u);
  EXPECT_EQ(mounts[0], (MountEntry{"/", "ext4", "/dev/sda1"}));
  EXPECT_EQ(mounts[1], (MountEntry{"/nix/store", "fuse.lazystore", "host:/nix/store"}));
  EXPECT_EQ(mounts[2], (MountEntry{"/srv/with space\ttab", "fuse.lazystore", "nfs://h/nix/store?version=4"}));
  EXPECT_EQ(mounts[6], (MountEntry{"/srv/under", "fuse.lazystore", "http://cache,http://b"}));
  EXPECT_EQ(unescape_mountinfo("a\\134b\\012c\\0"), "a\\b\nc\\0");
  EXPECT_EQ(unescape_mountinfo("\\999"), "\\999");
}

TEST(Mountinfo, FindsTheTopMostMountAndSaysWhatElseIsThere) {
  auto mounts = parse_mountinfo(kMountinfo);
  auto store = find_lazystore_mount(mounts, "/nix/store");
  ASSERT_TRUE(store) << store.error().message;
  EXPECT_EQ(store->source, "host:/nix/store");
  auto spaced = find_lazystore_mount(mounts, "/srv/with space\ttab");
  ASSERT_TRUE(spaced);
  auto covered = find_lazystore_mount(mounts, "/srv/over");  // a tmpfs mounted over it
  ASSERT_FALSE(covered);
  EXPECT_NE(covered.error().message.find("is a tmpfs mount"), std::string::npos) << covered.error().message;
  EXPECT_TRUE(find_lazystore_mount(mounts, "/srv/under"));
  auto none = find_lazystore_mount(mounts, "/nothing");
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("nothing is mounted at /nothing"), std::string::npos);
  EXPECT_EQ(lazystore_mounts(mounts).size(), 4u);
}

TEST(Mountinfo, ThisProcessesTableReads) {
  auto mounts = read_mountinfo();
  ASSERT_TRUE(mounts) << mounts.error().message;
  ASSERT_FALSE(mounts->empty());
  EXPECT_TRUE(std::any_of(mounts->begin(), mounts->end(), [](const MountEntry& m) { return m.mountpoint == "/"; }));
}

TEST(MountpointPath, NormalizesWithoutTouchingTheMountItself) {
  char pattern[] = "/tmp/lazystore-mounts-test-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  std::string root = pattern;
  std::filesystem::create_directories(root + "/real/mnt");
  std::filesystem::create_directory_symlink(root + "/real", root + "/link");
  EXPECT_EQ(*mountpoint_path(root + "/link/mnt"), root + "/real/mnt");
  EXPECT_EQ(*mountpoint_path(root + "/real//mnt/"), root + "/real/mnt");
  EXPECT_EQ(*mountpoint_path(root + "/real/x/../mnt"), root + "/real/mnt");
  // The last component is never resolved (it may be a stuck mount), and need not exist.
  EXPECT_EQ(*mountpoint_path(root + "/real/absent"), root + "/real/absent");
  EXPECT_EQ(*mountpoint_path("/"), "/");
  std::string cwd = std::filesystem::current_path();
  std::filesystem::current_path(root + "/real");
  EXPECT_EQ(*mountpoint_path("mnt"), root + "/real/mnt");
  std::filesystem::current_path(cwd);
  EXPECT_FALSE(mountpoint_path(""));
  EXPECT_FALSE(mountpoint_path(root + "/absent/mnt"));
  std::filesystem::remove_all(root);
}

TEST(ControlSocketOf, APathThatIsNoMountSaysSo) {
  auto socket = control_socket_of("/proc", std::chrono::milliseconds(2000));
  ASSERT_FALSE(socket);
  EXPECT_NE(socket.error().message.find("user.lazystore.stats"), std::string::npos) << socket.error().message;
}

}  // namespace
}  // namespace lazystore
