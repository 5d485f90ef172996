"""The marketer's dashboard: collect (Spark to plain data), render (one offline HTML file)."""
