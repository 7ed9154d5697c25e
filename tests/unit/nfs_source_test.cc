// SOURCE forms of the NFS upstream.
#include <gtest/gtest.h>

#include "upstream/nfs_source.h"

namespace lazystore {
namespace {

TEST(NfsSourceTest, FstabFormIsNfsV3ByDefault) {
  ASSERT_TRUE(is_nfs_source("10.0.0.1:/nix/store"));
  auto source = parse_nfs_source("10.0.0.1:/nix/store", 0);
  ASSERT_TRUE(source.ok()) << source.error().message;
  EXPECT_EQ(source->url, "nfs://10.0.0.1/nix/store?version=3");
  EXPECT_EQ(source->version, 3);
  EXPECT_EQ(source->display, "10.0.0.1:/nix/store");
}

TEST(NfsSourceTest, NfsversOptionPicksTheVersion) {
  auto source = parse_nfs_source("nix-server:/nix/store", 4);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->url, "nfs://nix-server/nix/store?version=4");
  EXPECT_EQ(source->version, 4);
}

TEST(NfsSourceTest, UrlKeepsItsOptions) {
  auto source = parse_nfs_source("nfs://127.0.0.1/store?version=4&nfsport=2049", 0);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->url, "nfs://127.0.0.1/store?version=4&nfsport=2049");
  EXPECT_EQ(source->version, 4);
  auto v3 = parse_nfs_source("nfs://127.0.0.1/srv/store?nfsport=2049&mountport=20048", 0);
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->url, "nfs://127.0.0.1/srv/store?nfsport=2049&mountport=20048&version=3");
  EXPECT_TRUE(parse_nfs_source("nfs://h/s?version=4", 4).ok());
}

TEST(NfsSourceTest, BadFormsAreRefused) {
  EXPECT_FALSE(is_nfs_source("/srv/nix/store"));
  EXPECT_FALSE(is_nfs_source("file:///srv/nix/store"));
  EXPECT_FALSE(is_nfs_source("https://cache.example/"));
  EXPECT_FALSE(parse_nfs_source("nfs://host", 0).ok());                 // no path
  EXPECT_FALSE(parse_nfs_source("nfs://h/s?version=2", 0).ok());        // no such version
  EXPECT_FALSE(parse_nfs_source("nfs://h/s?version=3", 4).ok());        // contradicts nfsvers
  EXPECT_FALSE(parse_nfs_source("h:/s", 2).ok());
  EXPECT_FALSE(parse_nfs_source("a/b:/s", 0).ok());
}

}  // namespace
}  // namespace lazystore
