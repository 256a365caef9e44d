"""The case file: enforcement subjects, officers, cases, text records, footage linked by signed annotations."""
