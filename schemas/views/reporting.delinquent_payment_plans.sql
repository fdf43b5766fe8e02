-- Payment plans in delinquency, with patient, practice and what is still owed.
-- refresh: on change
-- unique key: plan_id
SELECT pl.plan_id,
       pl.practice_id,
       pr.name AS practice_name,
       pa.last_name || ', ' || pa.first_name AS patient_name,
       pl.total_fee,
       COALESCE(c.collected, 0) AS collected,
       pl.total_fee - COALESCE(c.collected, 0) AS balance,
       pl.monthly_amount,
       pl.start_date
FROM dbo.payment_plans AS pl
JOIN dbo.patients AS pa ON pa.patient_id = pl.patient_id
JOIN dbo.practices AS pr ON pr.practice_id = pl.practice_id
LEFT JOIN reporting.plan_collections AS c ON c.plan_id = pl.plan_id
WHERE pl.status = 'delinquent'
