/* Unit tests for the request-body pace rules (src/downstream/body_pace.h). */
#include "downstream/body_pace.h"

#include "testlib.h"

#define GAP 1000u

TEST(gap_rule_alone)
{
    pt_body_pace p = {0};
    pt_body_pace_run(&p, true, 100);
    CHECK_INT(pt_body_pace_deadline(&p, GAP, 0), 1100);
    pt_body_pace_progress(&p, 10, 900);
    CHECK_INT(pt_body_pace_deadline(&p, GAP, 0), 1900); /* restarted by progress */
    CHECK(!pt_body_pace_late_by_gap(&p, GAP, 1899));
    CHECK(pt_body_pace_late_by_gap(&p, GAP, 1900));
}

TEST(rate_rule_grace_plus_credit)
{
    pt_body_pace p = {0};
    pt_body_pace_run(&p, true, 0);
    /* no bytes: the rate deadline is the grace period, same as the gap */
    CHECK_INT(pt_body_pace_deadline(&p, GAP, 1024), 1000);
    /* a 10-byte trickle every 300 ms: the gap moves, the rate does not keep up */
    for (uint64_t t = 300; t <= 900; t += 300) pt_body_pace_progress(&p, 10, t);
    CHECK_INT(pt_body_pace_deadline(&p, GAP, 1024), 1000 + 30 * 1000 / 1024);
    CHECK(!pt_body_pace_late_by_gap(&p, GAP, 1029));
    /* 2 KiB buys 2 s at 1 KiB/s */
    pt_body_pace q = {0};
    pt_body_pace_run(&q, true, 0);
    pt_body_pace_progress(&q, 2048, 500);
    CHECK_INT(pt_body_pace_deadline(&q, GAP, 1024), 1500); /* the gap comes first */
    pt_body_pace_progress(&q, 1, 2900);
    CHECK_INT(pt_body_pace_deadline(&q, GAP, 1024), 3000); /* now the rate */
}

TEST(paused_time_does_not_count)
{
    pt_body_pace p = {0};
    pt_body_pace_run(&p, true, 0);
    pt_body_pace_progress(&p, 1024, 100);
    pt_body_pace_run(&p, false, 600); /* 600 ms wanted */
    pt_body_pace_progress(&p, 0, 5000);
    pt_body_pace_run(&p, true, 10000); /* resumed after a 9.4 s pause */
    CHECK_INT(p.wanted_ms, 600);
    /* the gap restarts at the resume */
    CHECK_INT(pt_body_pace_deadline(&p, GAP, 1024), 11000);
    /* the rate allows 1000 (grace) + 1000 (1 KiB) - 600 (used) more ms */
    pt_body_pace_progress(&p, 1, 10900);
    CHECK_INT(pt_body_pace_deadline(&p, GAP, 1024), 10000 + 1000 + 1000 - 600);
    pt_body_pace_run(&p, true, 10500); /* idempotent */
    CHECK_INT(p.since, 10000);
}

TEST(no_overflow)
{
    pt_body_pace p = {0};
    pt_body_pace_run(&p, true, 5);
    pt_body_pace_progress(&p, UINT64_MAX - 1, 5);
    CHECK_INT(pt_body_pace_credit_ms(UINT64_MAX, 1), UINT64_MAX);
    CHECK(pt_body_pace_deadline(&p, GAP, 1) == 5 + GAP); /* the gap still applies */
    CHECK_INT(pt_body_pace_credit_ms(3000, 1u << 30), 0);
    CHECK_INT(pt_body_pace_credit_ms(1536, 1024), 1500);
}

TEST_MAIN()
