// What a server that takes over after a crash relies on: the inode journal (counts carry over,
// a torn record is ignored, forgotten numbers are compacted away on start and while serving, a
// kill in the middle of a compaction leaves the old journal), the inode table answering for an
// earlier server's numbers and forgetting them with the kernel, and handle numbers that never
// repeat across servers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>

#include "fd.h"
#include "handle_table.h"
#include "hash.h"
#include "inode_journal.h"
#include "inode_table.h"

namespace lazystore {

// Records are equal by content (not by where they are).
bool operator==(const InodeJournal::Record& a, const InodeJournal::Record& b) {
  return a.ino == b.ino && a.key == b.key && a.lookups == b.lookups;
}

namespace {

const std::string kBase = "0a0d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-hello-2.12";

struct JournalFiles {
  std::array<Fd, 2> fds;
  JournalFiles() {
    auto files = InodeJournal::create_memfds();
    EXPECT_TRUE(files.ok());
    if (files.ok()) {
      fds[0].reset((*files)[0]);
      fds[1].reset((*files)[1]);
    }
  }
  InodeJournal::Files get() const { return {fds[0].get(), fds[1].get()}; }
  off_t size() const { return lseek(fds[0].get(), 0, SEEK_END) + lseek(fds[1].get(), 0, SEEK_END); }
};

std::vector<InodeJournal::Record> reopen(const JournalFiles& files) {
  std::vector<InodeJournal::Record> records;
  EXPECT_TRUE(InodeJournal::open(files.get(), records).ok());
  return records;
}

StoreTreePtr hello_tree() {
  Tree tree = Tree::with_root(NodeType::Directory);
  auto bin = tree.add_child(Tree::kRoot, "bin", NodeType::Directory);
  EXPECT_TRUE(bin.ok());
  EXPECT_TRUE(tree.add_child(*bin, "hello", NodeType::Regular).ok());
  return std::make_shared<const StoreTree>(StoreTree{StorePath(kBase), std::move(tree)});
}

TEST(InodeJournal, CountsSurviveAndATornLastRecordIsIgnored) {
  JournalFiles files;
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(files.get(), records);
  ASSERT_TRUE(journal.ok());
  EXPECT_TRUE(records.empty());
  auto seven = journal->append(7, kBase, 1);
  ASSERT_TRUE(seven.ok());
  ASSERT_TRUE(journal->append(8, kBase + "/bin", 2).ok());
  journal->set_lookups(*seven, 5);
  // A server killed in the middle of an append: a whole record but its commit word (zero).
  unsigned char torn[40] = {};
  std::memcpy(torn + 4, "\x05\0\0\0\x09", 5);
  std::memcpy(torn + 24, "abcde", 5);
  uint64_t end = journal->bytes();
  for (int fd : files.get()) ASSERT_EQ(pwrite(fd, torn, sizeof torn, static_cast<off_t>(end)), 40);

  records = reopen(files);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], (InodeJournal::Record{7, kBase, 5}));
  EXPECT_EQ(records[1], (InodeJournal::Record{8, kBase + "/bin", 2}));
}

TEST(InodeJournal, ForgottenNumbersAreDroppedWhenAServerStarts) {
  JournalFiles files;
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(files.get(), records);
  ASSERT_TRUE(journal.ok());
  std::vector<uint64_t> at;
  for (uint64_t i = 0; i < 5000; ++i) {
    auto written = journal->append(100 + i, kBase + "/lib/file-" + std::to_string(i), 1);
    ASSERT_TRUE(written.ok());
    at.push_back(*written);
  }
  uint64_t full = journal->bytes();
  for (uint64_t i = 0; i < 5000; ++i) {
    if (i % 1000 != 0) journal->set_lookups(at[i], 0);  // the kernel forgot all but 5
  }
  EXPECT_FALSE(journal->wants_compaction());  // under 1 MiB forgotten: not while serving
  records = reopen(files);
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[1], (InodeJournal::Record{1100, kBase + "/lib/file-1000", 1}));
  std::vector<InodeJournal::Record> again;
  auto compacted = InodeJournal::open(files.get(), again);
  ASSERT_TRUE(compacted.ok());
  EXPECT_LT(compacted->bytes() * 100, full);
  EXPECT_LE(files.size(), 2 * 64 * 1024);  // the files themselves shrank: memory is returned
}

TEST(InodeJournal, CompactsWhileServingWhenForgottenRecordsOutweighLiveOnes) {
  JournalFiles files;
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(files.get(), records);
  ASSERT_TRUE(journal.ok());
  std::string pad(200, 'x');
  std::vector<uint64_t> at;
  for (uint64_t i = 0; i < 10000; ++i) {
    auto written = journal->append(100 + i, kBase + "/" + pad + std::to_string(i), 1);
    ASSERT_TRUE(written.ok());
    at.push_back(*written);
  }
  uint64_t kept_at = at[1234];
  std::string kept_key = kBase + "/" + pad + "1234";
  for (uint64_t i = 0; i < 10000; ++i) {
    if (i != 1234) journal->set_lookups(at[i], 0);
  }
  ASSERT_TRUE(journal->wants_compaction());
  uint64_t before = journal->bytes();
  ASSERT_TRUE(journal->compact({{1334, kept_key, 1, &kept_at}}).ok());
  EXPECT_LT(journal->bytes() * 1000, before);
  EXPECT_FALSE(journal->wants_compaction());
  journal->set_lookups(kept_at, 3);  // the record's new place
  ASSERT_TRUE(journal->append(9, kBase, 1).ok());
  records = reopen(files);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], (InodeJournal::Record{1334, kept_key, 3}));
  EXPECT_EQ(records[1], (InodeJournal::Record{9, kBase, 1}));
}

TEST(InodeJournal, AKillInTheMiddleOfACompactionLeavesTheOldJournal) {
  JournalFiles files;
  std::vector<InodeJournal::Record> records;
  {
    auto journal = InodeJournal::open(files.get(), records);
    ASSERT_TRUE(journal.ok());
    ASSERT_TRUE(journal->append(7, kBase, 1).ok());
  }
  // The inactive file as a compaction leaves it before its epoch store: records, no epoch.
  auto files_now = files.get();
  int inactive = lseek(files_now[0], 0, SEEK_END) == 0 ? files_now[0] : files_now[1];
  unsigned char partial[64 + 48] = {};
  std::memcpy(partial, "lz-ino02", 8);
  std::memcpy(partial + 64, "INO1\x05\0\0\0\x09", 9);
  std::memcpy(partial + 64 + 24, "abcde", 5);
  ASSERT_EQ(pwrite(inactive, partial, sizeof partial, 0), static_cast<ssize_t>(sizeof partial));
  records = reopen(files);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0], (InodeJournal::Record{7, kBase, 1}));
  // A kill after the switch, before the old file was emptied: two valid files, the newer wins.
  files_now = files.get();
  int active = lseek(files_now[0], 0, SEEK_END) != 0 ? files_now[0] : files_now[1];
  std::string old(static_cast<size_t>(lseek(active, 0, SEEK_END)), '\0');
  ASSERT_EQ(pread(active, old.data(), old.size(), 0), static_cast<ssize_t>(old.size()));
  {
    std::vector<InodeJournal::Record> live;
    auto journal = InodeJournal::open(files.get(), live);  // compacts into the other file
    ASSERT_TRUE(journal.ok());
    ASSERT_TRUE(journal->append(8, kBase + "/bin", 1).ok());
  }
  ASSERT_EQ(pwrite(active, old.data(), old.size(), 0), static_cast<ssize_t>(old.size()));
  records = reopen(files);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1], (InodeJournal::Record{8, kBase + "/bin", 1}));
}

TEST(InodeTableTakeover, NumbersHandedOutBeforeAreAnsweredAfterWithTheirCounts) {
  JournalFiles files;
  StoreTreePtr tree = hello_tree();
  uint32_t bin = *tree->tree.child(Tree::kRoot, "bin");
  uint32_t hello = *tree->tree.child(bin, "hello");
  uint64_t root_ino, hello_ino;
  {
    std::vector<InodeJournal::Record> records;
    auto journal = InodeJournal::open(files.get(), records);
    ASSERT_TRUE(journal.ok());
    InodeTable first;
    first.attach_journal(*journal, std::move(records));
    root_ino = first.acquire(tree, Tree::kRoot);
    hello_ino = first.acquire(tree, hello);
    first.acquire(tree, hello);  // a second lookup: one record, count 2
  }
  // The next server: the kernel still holds both numbers.
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(files.get(), records);
  ASSERT_TRUE(journal.ok());
  EXPECT_EQ(records.size(), 2u);
  InodeTable second;
  second.attach_journal(*journal, std::move(records));
  EXPECT_EQ(second.size(), 2u);
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
  EXPECT_EQ(second.acquire(tree, hello), hello_ino);  // count 3
  EXPECT_FALSE(second.forget(hello_ino, 2));
  EXPECT_TRUE(second.find(hello_ino).has_value());
  EXPECT_TRUE(second.forget(hello_ino, 1));  // the kernel's last one: gone, also from the journal
  EXPECT_FALSE(second.find(hello_ino).has_value());
  // A number restored and never used is forgotten the same way.
  EXPECT_TRUE(second.forget(root_ino, 1));
  EXPECT_FALSE(second.restored_key(root_ino).has_value());
  EXPECT_EQ(second.size(), 0u);
  EXPECT_TRUE(reopen(files).empty());
}

TEST(InodeTableTakeover, ALookupOfARestoredNumberAddsToItsCount) {
  JournalFiles files;
  StoreTreePtr tree = hello_tree();
  uint32_t bin = *tree->tree.child(Tree::kRoot, "bin");
  uint64_t bin_ino;
  {
    std::vector<InodeJournal::Record> records;
    auto journal = InodeJournal::open(files.get(), records);
    ASSERT_TRUE(journal.ok());
    InodeTable first;
    first.attach_journal(*journal, std::move(records));
    bin_ino = first.acquire(tree, bin);
  }
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(files.get(), records);
  ASSERT_TRUE(journal.ok());
  InodeTable second;
  second.attach_journal(*journal, std::move(records));
  EXPECT_EQ(second.acquire(tree, bin), bin_ino);  // the kernel now holds 2
  EXPECT_EQ(second.size(), 1u);
  EXPECT_FALSE(second.forget(bin_ino, 1));
  EXPECT_TRUE(second.forget(bin_ino, 1));
}

TEST(InodeTableTakeover, TheJournalHoldsWhatTheKernelHolds) {
  JournalFiles files;
  StoreTreePtr tree = hello_tree();
  uint32_t bin = *tree->tree.child(Tree::kRoot, "bin");
  std::vector<InodeJournal::Record> records;
  auto journal = InodeJournal::open(files.get(), records);
  ASSERT_TRUE(journal.ok());
  InodeTable table;
  table.attach_journal(*journal, std::move(records));
  // Looked up and forgotten again and again (memory pressure): the journal stays bounded.
  uint64_t most = 0;
  for (int round = 0; round < 40000; ++round) {  // 2.9 MB of records without compaction
    uint64_t ino = table.acquire(tree, round % 2 ? bin : Tree::kRoot);
    ASSERT_TRUE(table.forget(ino, 1));
    most = std::max(most, journal->bytes());
  }
  EXPECT_LT(most, 3u << 19);
  uint64_t kept = table.acquire(tree, bin);
  records = reopen(files);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].ino, kept);
}

TEST(InodeTableTakeover, AnEarlierServersNumberIsNeverGivenToAnotherPath) {
  JournalFiles files;
  std::vector<InodeJournal::Record> records;
  {
    auto journal = InodeJournal::open(files.get(), records);
    ASSERT_TRUE(journal.ok());
    // The number "bin" hashes to was handed out for another key (a collision resolved earlier).
    ASSERT_TRUE(journal->append(xxh3_64(kBase + "/bin"), kBase + "/other", 1).ok());
  }
  uint64_t taken = xxh3_64(kBase + "/bin");
  records.clear();
  auto reopened = InodeJournal::open(files.get(), records);
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
