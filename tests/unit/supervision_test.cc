// What a server that takes over after a crash relies on: the inode journal (whole records
// survive, a torn one is cut off), the inode table answering for an earlier server's numbers,
// and handle numbers that never repeat across servers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "fd.h"
#include "handle_table.h"
#include "hash.h"
#include "inode_journal.h"
#include "inode_table.h"

namespace lazystore {
namespace {

const std::string kBase = "0a0d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-hello-2.12";

Fd memfd() {
  auto fd = InodeJournal::create_memfd();
  EXPECT_TRUE(fd.ok());
  return Fd(fd.ok() ? *fd : -1);
}

StoreTreePtr hello_tree() {
  Tree tree = Tree::with_root(NodeType::Directory);
  auto bin = tree.add_child(Tree::kRoot, "bin", NodeType::Directory);
  EXPECT_TRUE(bin.ok());
  EXPECT_TRUE(tree.add_child(*bin, "hello", NodeType::Regular).ok());
  return std::make_shared<const StoreTree>(StoreTree{StorePath(kBase), std::move(tree)});
}

TEST(InodeJournal, RecordsSurviveAndATornLastRecordIsCutOff) {
  Fd fd = memfd();
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(fd.get(), records);
  ASSERT_TRUE(journal.ok());
  EXPECT_TRUE(records.empty());
  ASSERT_TRUE(journal->append(7, kBase).ok());
  ASSERT_TRUE(journal->append(8, kBase + "/bin").ok());
  // A server killed in the middle of a write: half a record at the end.
  off_t whole = lseek(fd.get(), 0, SEEK_END);
  const char torn[] = "\x09\0\0\0\0\0\0\0\x40\0";
  ASSERT_EQ(pwrite(fd.get(), torn, sizeof torn - 1, whole), static_cast<ssize_t>(sizeof torn - 1));

  auto reopened = InodeJournal::open(fd.get(), records);
  ASSERT_TRUE(reopened.ok());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], (InodeJournal::Record{7, kBase}));
  EXPECT_EQ(records[1], (InodeJournal::Record{8, kBase + "/bin"}));
  EXPECT_EQ(lseek(fd.get(), 0, SEEK_END), whole);  // the torn bytes are gone
  ASSERT_TRUE(reopened->append(10, kBase + "/bin/hello").ok());
  records.clear();
  ASSERT_TRUE(InodeJournal::open(fd.get(), records).ok());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[2], (InodeJournal::Record{10, kBase + "/bin/hello"}));
}

TEST(InodeTableTakeover, NumbersHandedOutBeforeAreAnsweredAfter) {
  Fd fd = memfd();
  StoreTreePtr tree = hello_tree();
  uint32_t bin = *tree->tree.child(Tree::kRoot, "bin");
  uint32_t hello = *tree->tree.child(bin, "hello");
  uint64_t root_ino, hello_ino;
  {
    std::vector<InodeJournal::Record> records;
    auto journal = InodeJournal::open(fd.get(), records);
    ASSERT_TRUE(journal.ok());
    InodeTable first;
    first.attach_journal(*journal, std::move(records));
    root_ino = first.acquire(tree, Tree::kRoot);
    hello_ino = first.acquire(tree, hello);
    first.acquire(tree, hello);  // a second lookup: journaled once
  }
  // The next server: the kernel still holds both numbers.
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(fd.get(), records);
  ASSERT_TRUE(journal.ok());
  EXPECT_EQ(records.size(), 2u);
  InodeTable second;
  second.attach_journal(*journal, std::move(records));
  EXPECT_FALSE(second.find(hello_ino).has_value());
  EXPECT_EQ(second.restored_key(hello_ino), kBase + "/bin/hello");
  EXPECT_EQ(second.restored_key(root_ino), kBase);
  EXPECT_FALSE(second.restored_key(12345).has_value());
  EXPECT_EQ(second.number_of_key(kBase), root_ino);  // the same path, the same number

  second.adopt(hello_ino, tree, hello);
  auto ref = second.find(hello_ino);
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->node, hello);
  EXPECT_FALSE(second.restored_key(hello_ino).has_value());
  second.forget(hello_ino, 1000);  // the kernel's count from before is unknown: kept
  EXPECT_TRUE(second.find(hello_ino).has_value());
  EXPECT_EQ(second.acquire(tree, hello), hello_ino);
}

TEST(InodeTableTakeover, AnEarlierServersNumberIsNeverGivenToAnotherPath) {
  Fd fd = memfd();
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(fd.get(), records);
  ASSERT_TRUE(journal.ok());
  // The number "bin" hashes to was handed out for another key (a collision resolved earlier).
  uint64_t taken = xxh3_64(kBase + "/bin");
  ASSERT_TRUE(journal->append(taken, kBase + "/other").ok());
  records.clear();
  auto reopened = InodeJournal::open(fd.get(), records);
  ASSERT_TRUE(reopened.ok());
  InodeTable table;
  table.attach_journal(*reopened, std::move(records));
  StoreTreePtr tree = hello_tree();
  uint32_t bin = *tree->tree.child(Tree::kRoot, "bin");
  uint64_t ino = table.acquire(tree, bin);
  EXPECT_NE(ino, taken);
  EXPECT_EQ(table.number_of(*tree, bin), ino);
}

TEST(HandleTable, NumbersOfDifferentServersNeverMeetAndAdoptKeepsTheFirst) {
  HandleTable<int> first(1), second(2);
  uint64_t a = first.insert(std::make_shared<int>(1));
  uint64_t b = second.insert(std::make_shared<int>(2));
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
  EXPECT_EQ(second.find(a), nullptr);  // opened before the restart
  auto kept = second.adopt(a, std::make_shared<int>(3));
  EXPECT_EQ(*kept, 3);
  EXPECT_EQ(*second.adopt(a, std::make_shared<int>(4)), 3);  // a concurrent adopter loses
  EXPECT_EQ(*second.erase(a), 3);
  EXPECT_EQ(second.erase(a), nullptr);
}

}  // namespace
}  // namespace lazystore
