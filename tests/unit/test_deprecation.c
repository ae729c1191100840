/* test_deprecation.c — the deprecation plugin's date parser (RFC 3339,
 * plain dates, "@seconds") and IMF-fixdate writer. */
#include "plugins/deprecation/deprecation.h"
#include "testlib.h"

static int64_t parse(const char *s)
{
    int64_t t = -1;
    return pt_deprecation_parse_date(s, &t) ? t : -1;
}

static const char *http_date(int64_t t)
{
    static char buf[30];
    pt_deprecation_http_date(t, buf);
    return buf;
}

TEST(dates)
{
    CHECK_INT(parse("1970-01-01"), 0);
    CHECK_INT(parse("2025-06-30"), 1751241600);
    CHECK_INT(parse("2025-06-30T00:00:00Z"), 1751241600);
    CHECK_INT(parse("2025-06-30T02:00:00+02:00"), 1751241600);
    CHECK_INT(parse("2025-06-29T22:00:00-02:00"), 1751241600);
    CHECK_INT(parse("2025-06-30T00:00:00.999z"), 1751241600);
    CHECK_INT(parse("2024-02-29"), 1709164800);
    CHECK_INT(parse("@1751241600"), 1751241600);
    const char *bad[] = {"", "@", "@-1", "@1x", "2023-02-29", "2025-04-31", "2025-00-10", "1969-12-31",
                         "2025-06-30T", "2025-06-30T12:00:00", "2025-06-30T24:00:00Z", "2025-06-30 12:00:00Z",
                         "2025-06-30T12:00:60Z", "2025-06-30T12:00:00+2:00", "2025-06-30T12:00:00.Z",
                         "25-06-30", "2025/06/30", "2025-06-30Z", "1970-01-01T00:00:00+01:00"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        if (parse(bad[i]) != -1) fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_INT(parse(bad[i]), -1);
    }
}

TEST(http_dates)
{
    CHECK_STR(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK_STR(http_date(1767225600), "Thu, 01 Jan 2026 00:00:00 GMT");
    CHECK_STR(http_date(1709164800 + 86399), "Thu, 29 Feb 2024 23:59:59 GMT");
    CHECK_STR(http_date(951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
    CHECK_STR(http_date(253402300799), "Fri, 31 Dec 9999 23:59:59 GMT");
}

TEST_MAIN()
