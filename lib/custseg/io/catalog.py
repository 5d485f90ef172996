"""Every table custseg writes and every model it registers, by name, in one place.

Tables are (layer, name) pairs under the lakehouse root; a stage reads its inputs and writes its
outputs through these names, so a rename is one line here.
"""

from __future__ import annotations

BRONZE = ("bronze", "raw_invoices")

FACT = "fct_invoices"
CANCELLATIONS = "cancellations"
QUARANTINE = "quarantine"
REFINE_LOG = "refine_log"
DIM_CUSTOMER = "dim_customer"
DIM_PRODUCT = "dim_product"
DIM_DATETIME = "dim_datetime"

RFM_SEGMENTS = "rfm_segments"
CUSTOMER_CLUSTERS = "customer_clusters"
CLUSTER_PROFILES = "cluster_profiles"
CLUSTER_SELECTION = "cluster_selection"
CLV_PREDICTIONS = "clv_predictions"

SEGMENT_MODEL = "custseg-segmentation"
SPEND_MODEL = "custseg-clv-spend"
TIER_MODEL = "custseg-clv-tier"

# What each gold report is built from: the report is rebuilt when one of these changes, and a
# stage that writes one of them runs before the report stage.
_FACT, _CUSTOMERS = ("silver", FACT), ("silver", DIM_CUSTOMER)
_PRODUCTS, _DATES = ("silver", DIM_PRODUCT), ("silver", DIM_DATETIME)
REPORT_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "report_customers": (_FACT, _CUSTOMERS, ("gold", RFM_SEGMENTS)),
    "report_sales": (_FACT, _PRODUCTS, _DATES),
    "report_transactions": (_FACT,),
    "report_country_customers": (_FACT,),
    "report_product_invoices": (_FACT, _PRODUCTS),
    "report_year_invoices": (_FACT,),
    "purchase_nature": (_FACT,),
    "country_activity": (_FACT,),
}
