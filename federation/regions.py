"""The Yangtze River Delta's 41 prefecture-level cities: the federation's regions; and China's provinces.

A demo of N nodes takes the first N in :data:`REGIONS` order: the four largest contributor cities first,
then the provincial order (Shanghai; Jiangsu's 13; Zhejiang's 11; Anhui's 16).

A region's 6-digit administrative division code (GB/T 2260) starts with its province's two digits
(:data:`PROVINCES`): 330100 Hangzhou is in 33 Zhejiang. Node policies admit askers by province this way
(``askers:``, see ``policies/base.yaml``); a catalog gives each node its ``code`` (the demo's catalogs take
them from :data:`REGIONS`), and a node it gives none is in no province.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    node_id: str  # stable, lower-case, used in directories and addresses
    code: str  # 6-digit administrative division code
    name: str  # English name
    name_zh: str
    province: str
    weight: float  # relative number of contributors (synthetic data)


REGIONS: tuple[Region, ...] = (
    Region("shanghai", "310000", "Shanghai", "上海", "Shanghai", 10.0),
    Region("hangzhou", "330100", "Hangzhou", "杭州", "Zhejiang", 5.0),
    Region("nanjing", "320100", "Nanjing", "南京", "Jiangsu", 4.5),
    Region("suzhou", "320500", "Suzhou", "苏州", "Jiangsu", 5.0),
    Region("hefei", "340100", "Hefei", "合肥", "Anhui", 3.0),
    Region("ningbo", "330200", "Ningbo", "宁波", "Zhejiang", 3.0),
    Region("wuxi", "320200", "Wuxi", "无锡", "Jiangsu", 2.5),
    Region("changzhou", "320400", "Changzhou", "常州", "Jiangsu", 1.8),
    Region("xuzhou", "320300", "Xuzhou", "徐州", "Jiangsu", 1.5),
    Region("nantong", "320600", "Nantong", "南通", "Jiangsu", 1.5),
    Region("lianyungang", "320700", "Lianyungang", "连云港", "Jiangsu", 0.8),
    Region("huaian", "320800", "Huai'an", "淮安", "Jiangsu", 0.8),
    Region("yancheng", "320900", "Yancheng", "盐城", "Jiangsu", 1.0),
    Region("yangzhou", "321000", "Yangzhou", "扬州", "Jiangsu", 1.0),
    Region("zhenjiang", "321100", "Zhenjiang", "镇江", "Jiangsu", 0.8),
    Region("taizhou-js", "321200", "Taizhou (Jiangsu)", "泰州", "Jiangsu", 0.8),
    Region("suqian", "321300", "Suqian", "宿迁", "Jiangsu", 0.6),
    Region("wenzhou", "330300", "Wenzhou", "温州", "Zhejiang", 1.5),
    Region("jiaxing", "330400", "Jiaxing", "嘉兴", "Zhejiang", 1.2),
    Region("huzhou", "330500", "Huzhou", "湖州", "Zhejiang", 0.8),
    Region("shaoxing", "330600", "Shaoxing", "绍兴", "Zhejiang", 1.2),
    Region("jinhua", "330700", "Jinhua", "金华", "Zhejiang", 1.2),
    Region("quzhou", "330800", "Quzhou", "衢州", "Zhejiang", 0.5),
    Region("zhoushan", "330900", "Zhoushan", "舟山", "Zhejiang", 0.4),
    Region("taizhou-zj", "331000", "Taizhou (Zhejiang)", "台州", "Zhejiang", 1.0),
    Region("lishui", "331100", "Lishui", "丽水", "Zhejiang", 0.4),
    Region("wuhu", "340200", "Wuhu", "芜湖", "Anhui", 0.8),
    Region("bengbu", "340300", "Bengbu", "蚌埠", "Anhui", 0.5),
    Region("huainan", "340400", "Huainan", "淮南", "Anhui", 0.4),
    Region("maanshan", "340500", "Ma'anshan", "马鞍山", "Anhui", 0.4),
    Region("huaibei", "340600", "Huaibei", "淮北", "Anhui", 0.3),
    Region("tongling", "340700", "Tongling", "铜陵", "Anhui", 0.3),
    Region("anqing", "340800", "Anqing", "安庆", "Anhui", 0.5),
    Region("huangshan", "341000", "Huangshan", "黄山", "Anhui", 0.3),
    Region("chuzhou", "341100", "Chuzhou", "滁州", "Anhui", 0.5),
    Region("fuyang", "341200", "Fuyang", "阜阳", "Anhui", 0.6),
    Region("suzhou-ah", "341300", "Suzhou (Anhui)", "宿州", "Anhui", 0.4),
    Region("luan", "341500", "Lu'an", "六安", "Anhui", 0.5),
    Region("bozhou", "341600", "Bozhou", "亳州", "Anhui", 0.4),
    Region("chizhou", "341700", "Chizhou", "池州", "Anhui", 0.2),
    Region("xuancheng", "341800", "Xuancheng", "宣城", "Anhui", 0.3),
)

BY_NODE_ID: dict[str, Region] = {r.node_id: r for r in REGIONS}
BY_CODE: dict[str, Region] = {r.code: r for r in REGIONS}


# China's provincial-level divisions by the first two digits of their codes (GB/T 2260)
PROVINCES: dict[str, str] = {
    "11": "Beijing",
    "12": "Tianjin",
    "13": "Hebei",
    "14": "Shanxi",
    "15": "Inner Mongolia",
    "21": "Liaoning",
    "22": "Jilin",
    "23": "Heilongjiang",
    "31": "Shanghai",
    "32": "Jiangsu",
    "33": "Zhejiang",
    "34": "Anhui",
    "35": "Fujian",
    "36": "Jiangxi",
    "37": "Shandong",
    "41": "Henan",
    "42": "Hubei",
    "43": "Hunan",
    "44": "Guangdong",
    "45": "Guangxi",
    "46": "Hainan",
    "50": "Chongqing",
    "51": "Sichuan",
    "52": "Guizhou",
    "53": "Yunnan",
    "54": "Tibet",
    "61": "Shaanxi",
    "62": "Gansu",
    "63": "Qinghai",
    "64": "Ningxia",
    "65": "Xinjiang",
    "71": "Taiwan",
    "81": "Hong Kong",
    "82": "Macao",
}


def province_of(code: str) -> str | None:
    """The province (two digits) of a 6-digit region code; None if it is not one.

    >>> province_of("330100"), province_of("991234"), province_of("33")
    ('33', None, None)
    """
    if len(code) != 6 or not code.isascii() or not code.isdigit() or code[:2] not in PROVINCES:
        return None
    return code[:2]


def check_region_code(code: str) -> str:
    """``code`` if it is a 6-digit region code of a known province, else ValueError saying what is wrong.

    >>> check_region_code("320500")
    '320500'
    """
    if province_of(code) is None:
        raise ValueError(
            f"region code {code!r} must be 6 digits starting with a province's two (e.g. 330100 for Hangzhou, "
            "in 33 Zhejiang)"
        )
    return code


def first_regions(n: int) -> tuple[Region, ...]:
    """The first ``n`` regions in the fixed demo order."""
    if not 1 <= n <= len(REGIONS):
        raise ValueError(f"a federation has 1 to {len(REGIONS)} regions, not {n}")
    return REGIONS[:n]
