-- The registry's store beside the scoring log (the POSTGRES_DB, created by the image).
CREATE DATABASE mlflow OWNER leadscore;
