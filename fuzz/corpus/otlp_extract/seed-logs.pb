
Þ


service.name
lending-apiº_2
endpoint
/risk-score2
responseTimeMsî2
status	
Timeout2
modelVersion
v1.3W*U
S{"endpoint":"/risk-score","responseTimeMs":120,"status":"OK","modelVersion":"v1.2"}