-- Insurance claims per practice and status, with billed and paid totals. Maintained incrementally.
SELECT pl.practice_id,
       c.status,
       COUNT(*) AS claims,
       SUM(c.billed_amount) AS billed,
       SUM(c.paid_amount) AS paid,
       COUNT(c.paid_amount) AS adjudicated
FROM dbo.insurance_claims AS c
JOIN dbo.payment_plans AS pl ON pl.plan_id = c.plan_id
GROUP BY pl.practice_id, c.status
