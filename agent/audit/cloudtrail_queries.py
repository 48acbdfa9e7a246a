"""Queries that find callers of the global STS endpoint where CloudTrail logs live.

Four per engine: the two from AWS's regional-endpoints guidance (host header only, kept
as published so results can be compared), and two that read what CloudTrail records
today: `additionalEventData.RequestDetails.endpointType` (the reliable signal; a global
call served in-region may carry the host header `sts-global.<region>.amazonaws.com`)
and `...RequestDetails.awsServingRegion`, to split calls served in us-east-1 from calls
served in the caller's region. The Athena column names are those of the CloudTrail
table DDL in the Athena user guide; that table has no `identityProvider` column, so the
provider of web-identity and SAML callers is read from `responseElements`.
"""

from __future__ import annotations

STS_SOURCE = "sts.amazonaws.com"
GLOBAL_HOST = "sts.amazonaws.com"
GLOBAL_LOG_REGION = "us-east-1"  # CloudTrail logs global-endpoint calls here
TABLE_PLACEHOLDER = "cloudtrail_logs"

_LI_GLOBAL = (
    f'filter eventSource = "{STS_SOURCE}"\n'
    '  and (additionalEventData.RequestDetails.endpointType = "global"\n'
    f'    or tlsDetails.clientProvidedHostHeader = "{GLOBAL_HOST}"\n'
    "    or tlsDetails.clientProvidedHostHeader like /^sts-global\\./)"
)
_LI_CALLER = (
    "| fields coalesce(userIdentity.sessionContext.sessionIssuer.arn, userIdentity.arn,\n"
    "    userIdentity.userName, userIdentity.invokedBy, userIdentity.principalId) as caller,\n"
    "  additionalEventData.RequestDetails.awsServingRegion as servedIn,\n"
    "  userIdentity.type, sourceIPAddress, eventTime"
)

_ATHENA_ENDPOINT_TYPE = "json_extract_scalar(additionaleventdata, '$.RequestDetails.endpointType')"
_ATHENA_SERVED_IN = "json_extract_scalar(additionaleventdata, '$.RequestDetails.awsServingRegion')"
_ATHENA_HOST = "tlsdetails.clientprovidedhostheader"
#: The caller, as the Logs Insights queries name it: an assumed role's sessions fold into
#: the role (`sessionissuer.arn`); callers without an ARN fall back by kind.
_ATHENA_CALLER = (
    "coalesce(useridentity.sessioncontext.sessionissuer.arn, useridentity.arn,\n"
    "                useridentity.username, useridentity.invokedby, useridentity.principalid)"
)


def athena_global_where(since_iso: str | None = None) -> str:
    """The WHERE clause shared by the printed query and the one `--athena-table` runs."""
    lines = [
        f"WHERE eventsource = '{STS_SOURCE}'",
        f"  AND ({_ATHENA_ENDPOINT_TYPE} = 'global'",
        f"    OR {_ATHENA_HOST} = '{GLOBAL_HOST}'",
        f"    OR {_ATHENA_HOST} LIKE 'sts-global.%')",
    ]
    if since_iso:
        lines.append(f"  AND eventtime >= '{since_iso}'")
    return "\n".join(lines)


def athena_summary_sql(table: str, since_iso: str | None = None) -> str:
    """One row per caller, host, serving region and source IP: what `--athena-table` runs.

    Grouped by the caller (an assumed role's sessions under its role), not by
    `useridentity.arn`, which names each session: one row per session would fill the
    row cap long before a fleet's callers were all seen. `arbitrary` keeps one sample
    of what varies inside a caller (a session ARN, a user name). Column names are a
    contract with `agent.audit.cloudtrail_athena.ROW_COLUMNS`.
    """
    return "\n".join(
        [
            "SELECT useridentity.type AS identity_type,",
            f"       {_ATHENA_CALLER} AS caller,",
            "       coalesce(json_extract_scalar(responseelements, '$.provider'),",
            "                json_extract_scalar(responseelements, '$.issuer'))",
            "         AS identity_provider,",
            "       useridentity.accountid AS account_id,",
            f"       {_ATHENA_HOST} AS host,",
            f"       {_ATHENA_ENDPOINT_TYPE} AS endpoint_type,",
            f"       {_ATHENA_SERVED_IN} AS served_in,",
            "       sourceipaddress AS source_ip,",
            "       eventname AS event_name,",
            "       arbitrary(useridentity.arn) AS arn,",
            "       arbitrary(useridentity.sessioncontext.sessionissuer.arn) AS issuer_arn,",
            "       arbitrary(useridentity.username) AS user_name,",
            "       arbitrary(useridentity.invokedby) AS invoked_by,",
            "       count(*) AS calls,",
            "       min(eventtime) AS first_seen,",
            "       max(eventtime) AS last_seen",
            f"FROM {table}",
            athena_global_where(since_iso),
            "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9",
            "ORDER BY calls DESC",
        ]
    )


def queries(region: str) -> dict[str, str]:
    """Every query, keyed by name; `region` is the region whose in-region calls to look for."""
    seed_li = "\n".join(
        [
            f'filter eventSource="{STS_SOURCE}" and '
            f'tlsDetails.clientProvidedHostHeader="{GLOBAL_HOST}"',
            "| fields eventTime, recipientAccountId, eventName, "
            "tlsDetails.clientProvidedHostHeader, sourceIPAddress, userIdentity.arn, @message",
            "| sort eventTime desc",
        ]
    )
    li_callers = "\n".join(
        [
            _LI_GLOBAL,
            _LI_CALLER,
            "| stats count(*) as calls, max(eventTime) as lastSeen by caller, userIdentity.type,"
            " servedIn",
            "| sort calls desc",
        ]
    )
    li_us_east_1 = "\n".join(
        [
            _LI_GLOBAL,
            f'  and additionalEventData.RequestDetails.awsServingRegion = "{GLOBAL_LOG_REGION}"',
            _LI_CALLER,
            "| stats count(*) as calls, max(eventTime) as lastSeen by caller, sourceIPAddress",
            "| sort calls desc",
        ]
    )
    seed_athena = "\n".join(
        [
            "SELECT eventtime, recipientaccountid, eventname,",
            "       tlsdetails.clientProvidedHostHeader, sourceipaddress, eventid,",
            "       useridentity.arn",
            f'FROM "{TABLE_PLACEHOLDER}"',
            f"WHERE eventsource = '{STS_SOURCE}'",
            f"  AND tlsdetails.clientProvidedHostHeader = '{GLOBAL_HOST}'",
            "ORDER BY eventtime DESC",
        ]
    )
    athena_split = "\n".join(
        [
            f"SELECT {_ATHENA_CALLER} AS caller,",
            f"       CASE WHEN {_ATHENA_SERVED_IN} = '{GLOBAL_LOG_REGION}' THEN 'us-east-1'",
            f"            WHEN {_ATHENA_SERVED_IN} IS NULL THEN 'unknown'",
            "            ELSE 'in-region' END AS served,",
            f"       {_ATHENA_SERVED_IN} AS served_in,",
            "       count(*) AS calls,",
            "       max(eventtime) AS last_seen",
            f"FROM {TABLE_PLACEHOLDER}",
            athena_global_where(),
            "GROUP BY 1, 2, 3",
            "ORDER BY calls DESC",
        ]
    )
    athena_region = "\n".join(
        [
            "SELECT eventtime, useridentity.arn, sourceipaddress, eventname",
            f"FROM {TABLE_PLACEHOLDER}",
            athena_global_where(),
            f"  AND {_ATHENA_SERVED_IN} = '{region}'",
            "ORDER BY eventtime DESC",
        ]
    )
    return {
        "region": region,
        "logged_in": GLOBAL_LOG_REGION,
        "logs_insights_seed": seed_li,
        "logs_insights": li_callers,
        "logs_insights_us_east_1": li_us_east_1,
        "athena_seed": seed_athena,
        "athena": athena_split,
        "athena_in_region": athena_region,
    }


#: Titles for the human report, in the order printed.
TITLES = {
    "logs_insights_seed": "CloudWatch Logs Insights, as in AWS's guidance (host header only)",
    "logs_insights": "CloudWatch Logs Insights: global calls by caller and serving region",
    "logs_insights_us_east_1": "CloudWatch Logs Insights: global calls served in us-east-1",
    "athena_seed": "Athena, as in AWS's guidance (host header only)",
    "athena": "Athena: global calls by caller, split by serving region",
    "athena_in_region": "Athena: global calls served in the region given by --region",
}
