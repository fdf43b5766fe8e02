-- Money collected per payment plan (posted payments); the base of the receivables views below.
SELECT p.plan_id,
       SUM(p.amount) AS collected,
       COUNT(*) AS payments
FROM dbo.payments AS p
WHERE p.status = 'posted'
GROUP BY p.plan_id
