#include "tools/mnemo/cli.h"

#include <gtest/gtest.h>

namespace mnemo::cli {
namespace {

CommandSpec TestSpec() {
  return CommandSpec{.name = "t",
                     .usage = "A [--json] [--n N]",
                     .summary = "test",
                     .flags = {{"json", false, "", "json"}, {"n", true, "N", "a number"}},
                     .min_positionals = 1,
                     .max_positionals = 2};
}

TEST(CliParse, FlagsAndPositionals) {
  auto p = Parse(TestSpec(), {"a", "--json", "--n", "5", "b"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->Has("json"));
  EXPECT_EQ(*p->GetInt("n", 0), 5);
  EXPECT_EQ(p->positionals(), (std::vector<std::string>{"a", "b"}));
  auto q = Parse(TestSpec(), {"--n=7", "a"});
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q->GetInt("n", 0), 7);
  EXPECT_EQ(*q->GetInt("missing", 3), 3);
}

TEST(CliParse, DoubleDashEndsFlags) {
  auto p = Parse(TestSpec(), {"--", "--json"});
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->Has("json"));
  EXPECT_EQ(p->positionals(), (std::vector<std::string>{"--json"}));
}

TEST(CliParse, ErrorsNameTheArgument) {
  auto unknown = Parse(TestSpec(), {"a", "--bogus"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("--bogus"), std::string::npos);
  auto no_value = Parse(TestSpec(), {"a", "--n"});
  ASSERT_FALSE(no_value.ok());
  EXPECT_NE(no_value.status().message().find("--n"), std::string::npos);
  auto value_on_bool = Parse(TestSpec(), {"a", "--json=1"});
  EXPECT_FALSE(value_on_bool.ok());
  auto too_few = Parse(TestSpec(), {});
  ASSERT_FALSE(too_few.ok());
  EXPECT_NE(too_few.status().message().find("usage"), std::string::npos);
  auto too_many = Parse(TestSpec(), {"a", "b", "c"});
  EXPECT_FALSE(too_many.ok());
  CommandSpec long_usage = TestSpec();
  long_usage.usage = "A [--json]\n       [--n N]";
  auto one_line = Parse(long_usage, {});
  ASSERT_FALSE(one_line.ok());
  EXPECT_EQ(one_line.status().message(),
            "usage: mnemo t A [--json] ... (mnemo t --help lists them all)");
  auto bad_int = Parse(TestSpec(), {"a", "--n", "5x"});
  ASSERT_TRUE(bad_int.ok());
  auto n = bad_int->GetInt("n", 0);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("5x"), std::string::npos);
}

TEST(CliParse, HelpSkipsPositionalCheck) {
  auto p = Parse(TestSpec(), {"--help"});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->Has("help"));
  const std::string help = HelpText(TestSpec());
  EXPECT_NE(help.find("--json"), std::string::npos);
  EXPECT_NE(help.find("--n N"), std::string::npos);
}

TEST(CliByteSize, Suffixes) {
  EXPECT_EQ(*ParseByteSize("512"), 512u);
  EXPECT_EQ(*ParseByteSize("64K"), 64u << 10);
  EXPECT_EQ(*ParseByteSize("512M"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("4G"), 4ull << 30);
  EXPECT_EQ(*ParseByteSize("4gib"), 4ull << 30);
  EXPECT_EQ(*ParseByteSize("1T"), 1ull << 40);
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("M").ok());
  EXPECT_FALSE(ParseByteSize("12X").ok());
  EXPECT_FALSE(ParseByteSize("-5").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999").ok());
  EXPECT_FALSE(ParseByteSize("17179869184G").ok());  // 2^34 GiB overflows
}

TEST(CliFormatBytes, Units) {
  EXPECT_EQ(FormatBytes(12), "12 B");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(3ull << 30), "3.00 GiB");
}

}  // namespace
}  // namespace mnemo::cli
