-- Run once by the postgres image on an empty data volume (as POSTGRES_USER, who then owns them):
-- the databases of the MLflow server and the Prefect server beside CTA's own (POSTGRES_DB=cta).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
