-- Accounts receivable aging per practice: how far open plans are behind their instalment schedule,
-- in buckets of one monthly amount (~30 days). Depends on today's date, so it is recomputed (a view on
-- the plan_collections view; refreshed after it).
-- refresh: at most every 60 seconds
WITH balances AS (
    SELECT pl.practice_id,
           pl.total_fee - COALESCE(c.collected, 0) AS balance,
           pl.down_payment
             + pl.monthly_amount * LEAST(pl.term_months, GREATEST(0, FLOOR((CURRENT_DATE - pl.start_date) / 30.0)))
             - COALESCE(c.collected, 0) AS overdue,
           pl.monthly_amount
    FROM dbo.payment_plans AS pl
    LEFT JOIN reporting.plan_collections AS c ON c.plan_id = pl.plan_id
    WHERE pl.status IN ('active', 'on_hold', 'delinquent')
)
SELECT practice_id,
       CASE
           WHEN overdue <= 0 THEN 'current'
           WHEN overdue <= monthly_amount THEN '1-30'
           WHEN overdue <= 2 * monthly_amount THEN '31-60'
           WHEN overdue <= 3 * monthly_amount THEN '61-90'
           ELSE '90+'
       END AS bucket,
       COUNT(*) AS plans,
       SUM(balance) AS balance,
       SUM(GREATEST(overdue, 0)) AS overdue
FROM balances
GROUP BY 1, 2
