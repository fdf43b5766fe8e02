-- Cash collected per practice and day (posted payments). Maintained incrementally with every merge.
-- refresh: on change
SELECT pl.practice_id,
       CAST(p.paid_at AS DATE) AS paid_on,
       SUM(p.amount) AS cash_collected,
       COUNT(*) AS payments,
       AVG(p.amount) AS average_payment
FROM dbo.payments AS p
JOIN dbo.payment_plans AS pl ON pl.plan_id = p.plan_id
WHERE p.status = 'posted'
GROUP BY pl.practice_id, CAST(p.paid_at AS DATE)
